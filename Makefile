# The two commands of the README. Both install what is missing first
# (Debian packages with apt-get, the package itself with pip), as root.
PYTHON ?= python3
# The known-good set of every Python dependency (see `deps-latest` below).
CONSTRAINTS ?= constraints.txt

.PHONY: install demo test test-fast test-floors deps-latest lint bench fuzz

install:
	PYTHON=$(PYTHON) CONSTRAINTS=$(CONSTRAINTS) bash tests/lab/install-deps.sh

demo: install
	$(PYTHON) -m tests.lab.demo

test: install
	$(PYTHON) -m ruff check check_smtp_posture tests
	$(PYTHON) -m pytest -q
	$(MAKE) --no-print-directory test-floors

# The edit-and-rerun loop: lint, then every test that neither waits out a deadline nor
# drives a lab daemon (the `slow` marker, tests/conftest.py); installs nothing.
test-fast:
	$(PYTHON) -m ruff check check_smtp_posture tests
	$(PYTHON) -m pytest -q -m "not slow"

# The lowest versions setup.cfg accepts, installed exactly, run the plugins' tests
# (README, "Dependencies").
test-floors: install
	PYTHON=$(PYTHON) CONSTRAINTS=$(CONSTRAINTS) bash tests/lab/floors.sh

# Move the known-good set: the newest versions in .venv-latest, the whole suite there,
# and constraints.txt rewritten only if it passed.
deps-latest:
	PYTHON=$(PYTHON) NAGIOS_PREFIX=$(NAGIOS_PREFIX) bash tests/lab/deps-latest.sh

lint:
	$(PYTHON) -m ruff check check_smtp_posture tests

bench: install
	$(PYTHON) -m tests.lab.bench

# For Icinga 2 and NRPE (README, "Icinga 2 and NRPE"): the plugins in a virtualenv of
# Debian's python3 that the nagios user (icinga2's and nrpe's) can run, reinstalled
# when the sources change; `install-nagios` adds the configuration Icinga 2 reads
# and the NRPE snippet as an example to edit.
NAGIOS_PREFIX ?= /opt/check_smtp_posture
NAGIOS_PYTHON ?= /usr/bin/python3
ICINGA2_CONF_DIR ?= /etc/icinga2/conf.d/check_smtp_posture
NRPE_CONF_DIR ?= /etc/nagios/nrpe.d
PLUGIN_SOURCES := setup.cfg pyproject.toml $(shell find check_smtp_posture -name '*.py' 2>/dev/null)

.PHONY: install-nagios install-nagios-plugins

install-nagios-plugins: $(NAGIOS_PREFIX)/.installed

$(NAGIOS_PREFIX)/.installed: $(PLUGIN_SOURCES) $(CONSTRAINTS)
	mkdir -p $(NAGIOS_PREFIX)
	flock $(NAGIOS_PREFIX)/.install.lock sh -ec '\
	  [ -x $(NAGIOS_PREFIX)/bin/python3 ] || $(NAGIOS_PYTHON) -m venv $(NAGIOS_PREFIX); \
	  $(NAGIOS_PREFIX)/bin/pip install -q --disable-pip-version-check -c $(abspath $(CONSTRAINTS)) '.[oauth]'; \
	  touch $@'

install-nagios: install-nagios-plugins
	install -d $(ICINGA2_CONF_DIR)
	install -m 0644 icinga2-conf/*.conf $(ICINGA2_CONF_DIR)/
	sed -i 's|^const CheckSmtpPostureBinDir = .*|const CheckSmtpPostureBinDir = "$(NAGIOS_PREFIX)/bin"|' \
	  $(ICINGA2_CONF_DIR)/check_smtp_posture-constants.conf
	if [ -d $(NRPE_CONF_DIR) ]; then \
	  sed 's|/opt/check_smtp_posture/bin|$(NAGIOS_PREFIX)/bin|' icinga2-conf/nrpe.d-check_smtp_posture.cfg \
	    > $(NRPE_CONF_DIR)/check_smtp_posture.cfg.example; fi

# For Nagios Core (README, "Nagios Core"): the same plugins, linked into the plugin
# directory that resource.cfg's $USER1$ names, the commands and templates into a
# directory nagios.cfg loads (Debian's cfg_dir=/etc/nagios-plugins/config), and the
# examples beside them as FILE.example to copy and edit.
NAGIOS_CFG_DIR ?= /etc/nagios-plugins/config
NAGIOS_PLUGIN_DIR ?= /usr/lib/nagios/plugins

.PHONY: install-nagios-core

install-nagios-core: install-nagios-plugins
	install -d $(NAGIOS_CFG_DIR) $(NAGIOS_PLUGIN_DIR)
	for plugin in $(NAGIOS_PREFIX)/bin/check_*; do ln -sf $$plugin $(NAGIOS_PLUGIN_DIR)/; done
	install -m 0644 nagios-conf/check_smtp_posture.cfg nagios-conf/check_smtp_posture-templates.cfg \
	  $(NAGIOS_CFG_DIR)/
	for example in nagios-conf/*-example.cfg; do \
	  install -m 0644 $$example $(NAGIOS_CFG_DIR)/$$(basename $$example).example; done

# Coverage-guided fuzzing (atheris) of the reply reader and the SPF parser, a fixed
# budget per target (FUZZ_SECONDS, default 60); not part of `make test`, whose
# tests/test_fuzz_corpus.py replays the kept corpus.
fuzz: install
	$(PYTHON) -m pip install -q -c $(CONSTRAINTS) -e '.[fuzz]'
	PYTHON=$(PYTHON) bash fuzz/run.sh
