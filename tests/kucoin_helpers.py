"""What the KuCoin end-to-end tests share."""

from __future__ import annotations

from pathlib import Path

from tests.e2e import ROOT


def kucoin_config(tmp: Path, rest: str, connection: str = "", name: str = "kucoin.toml",
                  extra: str = "") -> Path:
    """The shipped configs/kucoin-public.toml, pointed at ``rest``, recording raw frames."""
    text = CONFIG.read_text()
    assert 'name = "kucoin"\n' in text and "[output]\n" in text
    text = text.replace('name = "kucoin"\n', f'name = "kucoin"\nrest_url = "{rest}"\n', 1)
    text = text.replace("[output]\n", "[output]\nraw = true\n", 1)
    path = tmp / name
    path.write_text(text + (f"\n[connection]\n{connection}\n" if connection else "")
                    + (f"\n{extra}" if extra else ""))
    return path


CONFIG = ROOT / "configs" / "kucoin-public.toml"
