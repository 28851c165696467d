"""SMS text in the GSM 03.38 7-bit alphabet, and its split into message parts.

A single SMS holds 160 GSM characters; a longer text is sent as a concatenated SMS whose parts hold 153
each (the rest is the user data header). Characters of the extension table (€, [, ], {, }, \\, ^, ~, |)
take two. Typographic characters the alphabet lacks are replaced by plain ones; anything else by "?",
so a text never silently switches the message to UCS-2 (70 characters a part)."""
from __future__ import annotations

GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM_EXTENSION = frozenset("^{}\\[~]|€")
SINGLE_PART = 160
PART = 153
_REPLACEMENTS = {"„": '"', "“": '"', "”": '"', "‚": "'", "‘": "'", "’": "'", "–": "-", "—": "-", "…": "...", "\u00a0": " ", "\t": " "}


def gsm_text(text: str) -> str:
    """`text` with every character the GSM 7-bit alphabet lacks replaced."""
    out = []
    for char in text:
        char = _REPLACEMENTS.get(char, char)
        out.append(char if all(c in GSM_BASIC or c in GSM_EXTENSION for c in char) else "?")
    return "".join(out)


def gsm_length(text: str) -> int:
    return sum(2 if c in GSM_EXTENSION else 1 for c in text)


def sms_parts(text: str) -> list[str]:
    """The GSM text cut into message parts: one of up to 160, else parts of up to 153, cut at a space where possible."""
    text = gsm_text(text.strip())
    if gsm_length(text) <= SINGLE_PART:
        return [text]
    parts: list[str] = []
    rest = text
    while rest:
        if gsm_length(rest) <= PART:
            parts.append(rest)
            break
        cut, used = 0, 0
        for index, char in enumerate(rest):
            used += 2 if char in GSM_EXTENSION else 1
            if used > PART:
                break
            cut = index + 1
        space = rest.rfind(" ", 0, cut)
        if space > PART // 2:
            cut = space + 1
        parts.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    return parts
