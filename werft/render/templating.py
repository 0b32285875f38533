"""The jinja2 environment for werft's own templates (werft/render/templates/).

Values are inserted with ``| tojson``: a JSON string is a valid YAML scalar, so a name or
token can never break the structure of the document it lands in.
"""

from __future__ import annotations

from pathlib import Path

import jinja2

TEMPLATES_DIR = Path(__file__).parent / "templates"

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
    undefined=jinja2.StrictUndefined,  # a missing value is a bug, never an empty string
    keep_trailing_newline=True,
    autoescape=False,  # YAML and shell, not HTML
)


def render_template(name: str, **context: object) -> str:
    return _env.get_template(name).render(**context)
