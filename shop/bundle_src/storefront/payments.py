"""Formats a card number for the payment sandbox's authorization request."""


def format_card(card_number: str) -> str:
    """The card number as the bare digit string the payment sandbox expects."""
    return "".join(ch for ch in card_number if ch.isdigit())
