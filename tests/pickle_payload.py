"""A harmless pickle payload for the tests that check no loader runs code from a file."""


class Payload:
  """Unpickling this creates (empty) the file `marker`: the proof that a loader ran code from a
  file, and harmless otherwise."""

  def __init__(self, marker):
    self.marker = str(marker)

  def __reduce__(self):
    return (open, (self.marker, "w"))
