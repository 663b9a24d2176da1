"""What goes into a component's artifact (its image build context), per packaging mode.

* ``output``: the build output directory is the whole runtime (``dist/`` → the context's root);
  with ``runtime_dependencies: npm`` also ``package.json`` and the production ``node_modules``
  (installed by :mod:`tasks.build.deps` from the lockfile), beside the output, so ``node server.js``
  in the image resolves them;
* ``nextjs-standalone``: Next.js's ``.next/standalone`` tree (``server.js``, its traced
  ``node_modules``, ``.next/server``) plus ``public/`` and ``.next/static``, which Next leaves for the
  user to copy: the layout ``node server.js`` serves from.

A layout is a list of ``(source, path in the archive)``; the archive is packed from it directly,
nothing is copied into a staging directory.
"""

from __future__ import annotations

from pathlib import Path

from blocks.application import Component, Packaging, RuntimeDependencies
from opsflow.core.errors import BuildFailed
from tasks.git import Checkout

Layout = list[tuple[Path, str]]


def runtime_dir(checkout: Checkout, component: Component) -> Path:
    """Where the production dependencies of ``runtime_dependencies: npm`` are installed (``node_modules`` in it)."""
    return (checkout.workspace or checkout.path.parent) / "runtime" / component.name


def nextjs_app_dir(standalone: Path) -> Path:
    """The directory of the standalone tree that holds ``server.js`` (a monorepo nests it under the app's path)."""
    if (standalone / "server.js").is_file():
        return standalone
    found = sorted((p.parent for p in standalone.glob("*/**/server.js")
                    if "node_modules" not in p.parts and (p.parent / ".next").is_dir()),
                   key=lambda p: len(p.parts))
    if not found:
        raise BuildFailed(f"{standalone} has no server.js: is output: 'standalone' set in next.config?")
    return found[0]


def artifact_layout(component: Component, component_path: Path, output: Path,
                    runtime_modules: Path | None = None) -> Layout:
    """``(source, archive path)`` pairs making up the artifact of ``component`` (Dockerfile not included).

    Raises:
        BuildFailed: something the mode needs is missing, or the build output already has what opsflow adds.
    """
    if component.packaging == Packaging.nextjs_standalone:
        app = nextjs_app_dir(output)
        prefix = app.relative_to(output).as_posix()
        prefix = "" if prefix == "." else prefix + "/"
        layout: Layout = [(output, "")]
        static = component_path / ".next" / "static"
        if not static.is_dir():
            raise BuildFailed(f"component {component.name!r}: {static} is missing after `next build`")
        if (app / ".next" / "static").exists() or (app / "public").exists():
            raise BuildFailed(f"component {component.name!r}: the standalone tree already has public/ or .next/static")
        layout.append((static, f"{prefix}.next/static"))
        if (component_path / "public").is_dir():
            layout.append((component_path / "public", f"{prefix}public"))
        return layout
    layout = [(output, "")]
    if component.runtime_dependencies == RuntimeDependencies.npm:
        clash = [n for n in ("node_modules", "package.json") if (output / n).exists()]
        if clash:
            raise BuildFailed(f"component {component.name!r}: the build output {component.build_output!r} already "
                              f"has {', '.join(clash)}; with runtime_dependencies npm opsflow adds them")
        if runtime_modules is None or not runtime_modules.is_dir():
            raise BuildFailed(f"component {component.name!r}: the production dependencies were not installed")
        layout += [(component_path / "package.json", "package.json"), (runtime_modules, "node_modules")]
    return layout
