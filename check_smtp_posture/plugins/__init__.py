"""One module per console script.

Importing this package installs the family's warnings policy before any plugin
module imports its libraries, so that no library's warning or log line reaches
the output Icinga and Nagios parse (check_smtp_posture.nagios.warningpolicy).
"""

from check_smtp_posture.nagios import warningpolicy

warningpolicy.install()
