"""Stream processing: decoding, batch planning, atomic Redis updates, monitors, the faust app."""
