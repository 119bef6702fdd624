"""Hypothesis strategies the tests share."""

from hypothesis import strategies as st


def any_text(max_size: int) -> st.SearchStrategy[str]:
    """Any text a user or the database could hand a page: markup characters,
    quotes, ampersands, any script; no lone surrogates (not valid UTF-8)."""
    return st.text(
        alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=max_size
    )
