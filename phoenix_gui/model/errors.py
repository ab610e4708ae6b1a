from ..validate import InputError


class ModelFileError(InputError):
    """A model file cannot be used; the message is one plain sentence for the user."""
