# nsnet -- the two set-up commands of the README: `make lab` and `make test`.
# Both install what is missing (Debian packages with apt-get, Python deps
# into .venv) and are safe to run again.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# command -> Debian package that provides it: what nsnet needs to run ...
SYSTEM_TOOLS := ip:iproute2 brctl:bridge-utils ping:iputils-ping nsenter:util-linux \
                unshare:util-linux setpriv:util-linux nft:nftables
# ... and what the tests and benchmarks compare with or measure by
TEST_TOOLS := ss:iproute2 iptables:iptables /usr/lib/cni/bridge:containernetworking-plugins \
              /usr/lib/podman/aardvark-dns:aardvark-dns dot:graphviz iperf3:iperf3 \
              dnsperf:dnsperf dig:bind9-dnsutils sysctl:procps

.PHONY: lab lab-down test test-runtime unit lint bench reliability security-report system-deps \
        test-deps apt-missing runtime-deps clean
.PHONY: overlay-deps demo-overlay

lab: system-deps $(VENV)/.installed
	$(BIN)/nsnet lab

lab-down: $(VENV)/.installed
	$(BIN)/nsnet lab --down

# An overlay network across 3 simulated hosts with a real 3-member etcd, on
# this machine, in a sandbox: join, agent, create, connect, ping, teardown.
demo-overlay: system-deps $(VENV)/.installed-test
	@$(MAKE) -s overlay-deps
	$(BIN)/python examples/overlay_demo.py

# Two pytest-xdist workers: most of a test's time is spent waiting (timeouts
# of blocked probes, daemons starting, RCU), so two share the 2 cores well;
# every test runs in its own sandbox, and the leak check runs in the controller.
TEST_WORKERS ?= 2
test: system-deps test-deps $(VENV)/.installed-test
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal --durations=15 tests --ignore=tests/runtime

# Real runtimes, sandboxed, on nsnet: podman (CNI backend) + runc, containerd's
# ctr run --cni, a libcni driver built offline (CNI plugin), and dockerd
# (docker.io) on nsnet's Docker network + IPAM plugin.
test-runtime: system-deps test-deps runtime-deps $(VENV)/.installed-test
	$(BIN)/python -m pytest -q tests/runtime

unit: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q tests/unit

# Long runs live here, never in `make test`: the full side-by-side benchmark
# (article, CNI reference plugins, ip -batch, kernel floor, nsnet), a profile,
# published ports vs CNI portmap, embedded DNS vs aardvark-dns, CNI plugin latency,
# the README's small claims (check matrix, CLI start-up, pyroute2's import cost), and
# scale (cost with 5000 endpoints present; topology up vs the bulk commands).
bench: system-deps test-deps $(VENV)/.installed-bench
	$(BIN)/python -m bench.setup --n 10 100 500 1000 --reps 3
	$(BIN)/python -m bench.profile --n 1000
	$(BIN)/python -m bench.ports --max 10000 --budget 600 --out bench/results/ports.md
	$(BIN)/python -m bench.dns --names 10000 --rounds 5 --out bench/results/dns.md
	$(BIN)/python -m bench.cni --n 50 --out bench/results/cni.md
	$(PYTHON) -m venv .venv-pyroute2 && .venv-pyroute2/bin/pip install -q pyroute2  # measured only
	$(BIN)/python -m bench.claims --pyroute2-venv .venv-pyroute2 --out bench/results/claims.md
	$(BIN)/python -m bench.scale --before bench/results/scale-before.json  # 5 x 1000, stars
	@$(MAKE) -s overlay-deps
	$(BIN)/python -m bench.overlay  # 3 simulated hosts + etcd: convergence, iperf3, bulk, scale

# The adversarial suite's catalogue: attack, promise, result.
security-report: system-deps test-deps $(VENV)/.installed-test
	NSNET_SECURITY_REPORT=bench/results/security.md $(BIN)/python -m pytest -q tests/security

# Every crash point (~200) + 40 random-time kills, two trials at a time, and
# 10,000 fuzz cases.
reliability: system-deps test-deps $(VENV)/.installed-test
	rm -f bench/results/fuzz.txt
	NSNET_FUZZ_EXAMPLES=5000 NSNET_FUZZ_REPORT=bench/results/fuzz.txt \
	  $(BIN)/python -m pytest -q tests/kernel/test_fuzz.py
	$(BIN)/python -m bench.reliability --jobs 2 --plant-check --out bench/results/reliability.md
	$(BIN)/python -m bench.reliability_report bench/results/reliability.md bench/results/fuzz.txt
	# the overlay (#17): SIGKILL at every crash point of connect/disconnect, and
	# 3 simulated hosts connecting 100 endpoints each at once
	NSNET_OVERLAY_CRASH=all NSNET_OVERLAY_CONCURRENT=100 $(BIN)/python -m pytest -q -n 0 \
	  tests/e2e/test_overlay_driver.py -k "sigkill or concurrently"

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests bench

system-deps:
	@$(MAKE) -s apt-missing TOOLS="$(SYSTEM_TOOLS)" CHECK_PYTHON=1

test-deps:
	@$(MAKE) -s apt-missing TOOLS="$(TEST_TOOLS)"
	@$(MAKE) -s overlay-deps

# apt-get install those of the packages $(1) that are missing, behind a
# temporary policy-rc.d: no package may start its own service on the machine.
define install_guarded
	@missing=""; \
	for pkg in $(1); do \
	  dpkg -s $$pkg >/dev/null 2>&1 || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  guard=""; [ -e /usr/sbin/policy-rc.d ] || { guard=1; printf '#!/bin/sh\nexit 101\n' \
	    > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; }; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  rc=$$?; [ -z "$$guard" ] || rm -f /usr/sbin/policy-rc.d; exit $$rc; \
	fi
endef

# Overlay networks (#17): tests run a real etcd cluster inside the sandbox
# (tests/overlay_world.py) and check nsnet's keys with etcd's own client; the
# package's own etcd service must not start on the machine.
OVERLAY_PACKAGES := etcd-server etcd-client
overlay-deps:
	$(call install_guarded,$(OVERLAY_PACKAGES))

apt-missing:
	@missing=""; \
	for pair in $(TOOLS); do \
	  cmd=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$cmd >/dev/null 2>&1 || PATH="$$PATH:/usr/sbin:/sbin" command -v $$cmd >/dev/null 2>&1 || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$(CHECK_PYTHON)" ]; then \
	  command -v $(PYTHON) >/dev/null 2>&1 || missing="$$missing python3"; \
	  $(PYTHON) -c 'import ensurepip, venv' >/dev/null 2>&1 || missing="$$missing python3-venv"; \
	fi; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

# (golang-github-appc-cni-dev is the package that provides
# golang-github-containernetworking-cni-dev: libcni 1.1.2's source)
# docker.io: its dockerd is only ever started by the test, in a sandbox; a
# temporary policy-rc.d keeps the package from starting one on the machine.
RUNTIME_PACKAGES := podman runc busybox-static containerd golang-go \
                    golang-github-appc-cni-dev procps docker.io
runtime-deps:
	$(call install_guarded,$(RUNTIME_PACKAGES))

$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	touch $@

$(VENV)/.installed: $(VENV)/.created pyproject.toml
	$(BIN)/pip install -q -e .
	# an editable install compiles nothing: without this, every nsnet process
	# under PYTHONDONTWRITEBYTECODE=1 compiles the package again (~0.7 s of CPU)
	$(BIN)/python -I -m compileall -q src
	touch $@

$(VENV)/.installed-bench: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[bench]'
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml
	$(BIN)/pip install -q -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis build src/*.egg-info
