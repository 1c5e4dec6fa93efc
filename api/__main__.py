"""``python -m api``: the API's commands alone (the same ones ``declic`` registers)."""

from __future__ import annotations

import typer

from api.cli import register

app = typer.Typer(help="Déclic API commands.", no_args_is_help=True)
register(app)

if __name__ == "__main__":
    app()
