"""Clients for the forge APIs opsflow reports to (GitHub, Gitea, GitLab): commit statuses and PR comments.

``GitForge.get_client()`` builds one; :func:`forge_client` does the same from plain values.
"""

from opsflow.forge.api import Comment, CommentRef, CommitState, ForgeClient, PullRequestInfo
from opsflow.forge.clients import CLIENTS, GiteaClient, GitHubClient, GitLabClient, forge_client

__all__ = ["CLIENTS", "Comment", "CommentRef", "CommitState", "ForgeClient", "GitHubClient", "GitLabClient",
           "GiteaClient", "PullRequestInfo", "forge_client"]
