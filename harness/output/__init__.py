"""What bench writes for people and CI: ``progress`` (the bar or plain lines while a sweep runs),
``summary`` (the table at the end), ``ci`` (JUnit XML and the Markdown summary of budget verdicts),
``files`` (files named on the command line: checked before a sweep, written atomically)."""
