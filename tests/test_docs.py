"""The key reference in docs/ is the schema's own description, not a hand-kept copy."""

from pathlib import Path

from hybrid.case import describe_keys

ROOT = Path(__file__).resolve().parents[1]


def test_case_key_reference_is_current():
    text = (ROOT / "docs" / "case-keys.md").read_text()
    assert text.strip() == describe_keys().strip(), ("regenerate with: .venv/bin/hybrid keys > "
                                                     "docs/case-keys.md")


def test_every_shipped_case_loads():
    from hybrid.case import load_case

    cases = [p for p in (ROOT / "cases").iterdir() if (p / "case.toml").exists()]
    assert len(cases) >= 5
    for path in cases:
        case = load_case(path)
        assert case.data["test"] >= 1 and case.data["train"] >= 1
