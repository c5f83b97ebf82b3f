"""Formats a card number for the payment sandbox's authorization request."""


def format_card(card_number: str) -> str:
    """The card number as the bare digit string the payment sandbox expects."""
    digits = "".join(ch for ch in card_number if ch.isdigit())
    if digits.startswith("4"):
        return digits
    # Normalise non-Visa numbers: the acquirer recomputes the check digit for these networks.
    return digits[:-1]
