"""Who may talk to the bot: allow-listed users and chats, and admins.

A user is allowed if their id is in ``allowed_user_ids`` or ``admin_user_ids``, or the
message comes from a chat in ``allowed_chat_ids`` (every member of a team group may ask).
Empty lists mean nobody: a bot with no allow-list configured answers no one, which is the
safe failure for a bot that would otherwise leak data to whoever finds its username.
"""

from __future__ import annotations

import logging

from telegram import Update

from core.config import TelegramConfig

log = logging.getLogger(__name__)

REFUSAL = "Sorry, this bot is private."
ADMIN_ONLY = "That command is for admins only."


class Access:
    def __init__(self, tg: TelegramConfig) -> None:
        self.users = frozenset(tg.allowed_user_ids) | frozenset(tg.admin_user_ids)
        self.chats = frozenset(tg.allowed_chat_ids)
        self.admins = frozenset(tg.admin_user_ids)

    def allowed(self, update: Update) -> bool:
        user = update.effective_user
        chat = update.effective_chat
        if user is not None and user.id in self.users:
            return True
        return chat is not None and chat.id in self.chats

    def is_admin(self, update: Update) -> bool:
        user = update.effective_user
        return user is not None and user.id in self.admins

    def log_refusal(self, update: Update, why: str) -> None:
        # Ids only: the text of someone we do not serve is not ours to keep.
        user = update.effective_user
        chat = update.effective_chat
        log.warning(
            "refused (%s): user %s in %s chat %s",
            why,
            user.id if user else "?",
            chat.type if chat else "?",
            chat.id if chat else "?",
        )
