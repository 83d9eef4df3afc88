"""Errors a user can fix. The CLI prints them without a traceback and exits with code 2."""


class UserError(Exception):
    """Bad input, a missing model, an unreadable database: something the user must change."""


class ModelNotFound(UserError):
    """A model's weights are not where the configuration says; the message says how to get them."""
