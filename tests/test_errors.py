"""The exception tree's messages (cnnsearch/errors.py)."""

from cnnsearch.errors import RecipeError


def test_an_error_message_is_one_printable_line_with_its_own_characters_kept():
    """A name read from a file may hold a newline or a terminal escape: the one error line
    shows them escaped, and keeps a backslash, a quote and a non-ASCII letter as they are."""
    message = "study 'a\nb': C:\\data\\x \x1b[31mred\x1b[0m, é"
    assert str(RecipeError(message)) == "study 'a\\nb': C:\\data\\x \\x1b[31mred\\x1b[0m, é"
