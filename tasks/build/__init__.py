"""Building a component: its dependencies (cached by lockfile), its build commands, its artifact's layout."""

from tasks.build.app import BuildResult, build_app, component_dir, output_path

__all__ = ["BuildResult", "build_app", "component_dir", "output_path"]
