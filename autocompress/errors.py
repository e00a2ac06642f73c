"""User-facing errors: one line that names the field and what is allowed."""


class AutocompressError(Exception):
    """An error caused by the user's input; the CLI prints it as one line and exits 2."""


class ConfigError(AutocompressError):
    """A job, recipe, search space or target that does not validate."""

    def __init__(self, field: str, problem: str):
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class ModelSourceError(AutocompressError):
    """A model that cannot be found or loaded offline."""
