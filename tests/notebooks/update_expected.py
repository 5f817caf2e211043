"""Rewrite tests/notebooks/expected.json from a fresh run of the notebooks on the sandbox.

    python tests/notebooks/update_expected.py [NOTEBOOK ...]

Runs each notebook with nbclient in a temporary copy, against a new sandbox with the
default settings and no credentials (as nbval does), and keeps the sanitized outputs
of the cells tagged ``nbval-check-output``. Read the diff before committing it: these
outputs are what the notebooks promise.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

# nbrun beside this file; the package from this checkout even when it is not installed.
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[2]))

import nbrun


def main(argv: list[str]) -> int:
    names = argv or list(nbrun.NOTEBOOKS)
    unknown = sorted(set(names) - set(nbrun.NOTEBOOKS))
    if unknown:
        print(f"unknown notebook(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    from pgcloud_nb.sandbox import Sandbox

    table = nbrun.load_expected() if nbrun.EXPECTED.exists() else {}
    root = nbrun.reachable_dir("pgcloud-nb-expected-")
    home = root / "sandbox"
    work = root / "notebooks"
    nbrun.copy_notebooks(work, expected=False)
    env = nbrun.clean_env(PGCLOUD_SANDBOX_HOME=str(home))
    failed = 0
    try:
        for name in names:
            nb = nbrun.execute(work / name, env, root / "secrets.json")
            errors = [
                (c.id, o.ename, o.evalue)
                for c in nbrun.code_cells(nb)
                for o in c.outputs
                if o.output_type == "error"
            ]
            if errors:
                print(f"{name}: not updated, cells failed: {errors}", file=sys.stderr)
                failed += 1
                continue
            table[name] = {c.id: nbrun.comparable(c.outputs) for c in nbrun.checked(nb)}
            print(f"{name}: {len(table[name])} checked cell(s)")
    finally:
        Sandbox(home).stop()
        shutil.rmtree(root, ignore_errors=True)
    ordered = {name: table[name] for name in nbrun.NOTEBOOKS if name in table}
    nbrun.EXPECTED.write_text(json.dumps(ordered, indent=1, ensure_ascii=False) + "\n", "utf-8")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
