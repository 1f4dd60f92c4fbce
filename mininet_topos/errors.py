"""The one exception the lab raises for problems an operator can act on."""


class LabError(Exception):
    """The lab could not be built, reached or torn down; the message says what to do."""
