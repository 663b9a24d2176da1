"""The git forge (GitHub, Gitea or GitLab) that hosts the repositories and receives reports."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

from prefect.blocks.core import Block
from pydantic import Field

from blocks.fields import HttpUrl, RequiredSecret, Secret
from blocks.schema import CachedJsonSchema

if TYPE_CHECKING:
    from opsflow.forge import ForgeClient


class ForgeKind(StrEnum):
    github = "github"
    gitea = "gitea"
    gitlab = "gitlab"


class GitForge(CachedJsonSchema, Block):
    """A forge API endpoint with a token for commit statuses and PR comments."""

    _block_type_name = "opsflow git forge"
    _block_type_slug = "opsflow-git-forge"
    _description = "A GitHub, Gitea or GitLab API with the token opsflow reports with."

    kind: ForgeKind = Field(description="Which forge API this is.")
    api_url: HttpUrl = Field(
        description="API base URL: https://api.github.com, https://gitea.lan/api/v1 or https://gitlab.lan/api/v4."
    )
    token: RequiredSecret = Field(description="API token with rights to post statuses and comments and to clone.")
    webhook_secret: Secret = Field(default=None, description="Shared secret webhook deliveries are signed with.")
    timeout: float = Field(default=15, gt=0, description="Seconds per API request.")

    @property
    def clone_user(self) -> str:
        """The user name git sends with this forge's token over HTTPS."""
        return {"github": "x-access-token"}.get(self.kind.value, "oauth2")

    def get_client(self) -> ForgeClient:
        """A client for this forge's API (commit statuses, PR comments); close it or use it in ``with``."""
        from opsflow.forge import forge_client  # not at the top: opsflow.forge imports blocks.fields

        return forge_client(self.kind.value, self.api_url, self.token.get_secret_value(), timeout=self.timeout)
