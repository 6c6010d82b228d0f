"""One helper that finds templates/ and styles/, in an installed wheel or in a source checkout."""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent.parent  # .../reporter


def data_filename(kind: str, name: str = "") -> Path:
    """Path of `name` under `kind` ('templates' or 'styles').

    A wheel carries them inside the package (reporter/templates); a checkout or an editable install
    has them at the repository root, beside reporter/.
    """
    for base in (_PKG / kind, _PKG.parent / kind):
        if base.is_dir():
            return base / name if name else base
    raise FileNotFoundError(f"attn-report installation is missing its {kind}/ folder (looked in {_PKG})")
