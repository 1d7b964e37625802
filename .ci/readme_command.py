"""Print the README command after the marker ``<!-- NAME-command -->``.

CI runs the README's own words; a test checks the workflow does the same.
"""

import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_command(name: str) -> str:
    lines = README.read_text(encoding="utf-8").splitlines()
    marker = f"<!-- {name}-command -->"
    start = lines.index(marker)
    # the marker, then the ``` fence, then the command on one line
    return lines[start + 2].strip()


if __name__ == "__main__":
    print(readme_command(sys.argv[1]))
