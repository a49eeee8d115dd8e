# Sallyport — build, run, test and package.
#   make run    install what is missing, build, serve on 127.0.0.1:1080 (embedded default config)
#   make test   install what is missing, build, run every test (PAM, interop and cluster included)
#   make unit   build and run the in-process unit tests only (quick)
#   make cluster    three instances behind HAProxy: spread, client addresses, kill, rolling reload
#   make deb    build a Debian package into dist/
#   make bench  Sallyport against microsocks and Dante on loopback (table + bench-results/latest.json)
#   make bench-pam  PAM logins per second through pam_matrix
#   make profile    where each proxy's CPU goes per connection and per UDP round trip (perf)
#   make fuzz       every libFuzzer target for FUZZ_SECONDS each (default 60), from Tests/Fuzz/Corpus
#   make sanitize   the whole test suite under AddressSanitizer, then under ThreadSanitizer
#   make soak       a mixed load for SOAK_SECONDS (default 600), sampled into a CSV and a plot

SWIFT ?= swift
# Release builds (the package, make run, the benchmarks): without Swift's dynamic exclusivity checks,
# which cost 13 % of the instructions per relayed connection (callgrind, docs/performance.md), as
# swift-nio builds its own performance tests; debug builds and every test build keep them.
RELEASE := -c release -Xswiftc -enforce-exclusivity=unchecked
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
VERSION := $(shell sed -n 's/^public let sallyportVersion = "\(.*\)"/\1/p' Sources/Sallyport/Version.swift)

# Debian packages: to build and run, and what the tests drive (real clients, pam_wrapper).
RUN_PACKAGES := libpam0g-dev libcrypt-dev libyaml-dev
TEST_PACKAGES := $(RUN_PACKAGES) gcc libpam-wrapper libnss-wrapper libpam-modules curl ncat netcat-openbsd proxychains4 python3 python3-socks \
	lintian man-db systemd chromium python3-websocket haproxy dante-server tinyproxy whois apache2-utils \
	openssl python3-cryptography tcpdump dante-client python3-pyftpdlib ftp

# The PAM suite runs through real PAM: pam_wrapper redirects libpam to our service files (pam_matrix
# with a password file), nss_wrapper supplies the users' groups.
PAM_FIXTURES := $(CURDIR)/.build/pam-fixtures
PAM_TEST_ENV := LD_PRELOAD="libpam_wrapper.so libnss_wrapper.so" PAM_WRAPPER=1 \
	PAM_WRAPPER_SERVICE_DIR=$(PAM_FIXTURES)/services NSS_WRAPPER_PASSWD=$(PAM_FIXTURES)/passwd \
	NSS_WRAPPER_GROUP=$(PAM_FIXTURES)/group SALLYPORT_PAM_FIXTURES=$(PAM_FIXTURES)

# Installs the Debian packages named in $(1) that are not installed yet.
define apt_install
	@missing=""; for p in $(1); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi
endef

.PHONY: all build run test unit alloc-counter deps-run deps-test deb clean bench bench-pam profile fuzz sanitize soak cluster cluster-run

all: build

deps-run:
	$(call apt_install,$(RUN_PACKAGES))

deps-test:
	$(call apt_install,$(TEST_PACKAGES))

build: deps-run
	$(SWIFT) build $(RELEASE)

run: build
	.build/release/sallyport

# Two kinds of tests. Unit tests (in-process, no sockets to other programs) run fully parallel;
# system tests (the binary, real clients, PAM, namespaces, the package) run at most
# SYSTEM_TEST_WIDTH at a time, and those marked `.timing` alone. Temporary files of a run go to
# TEST_TMP, emptied when the next run starts.
UNIT_TEST_TARGETS := (SOCKSProtocolTests|SallyportPolicyTests|SallyportAuthTests|SallyportRelayTests|SallyportTests)\.
SYSTEM_TEST_WIDTH ?= 4
# The system tests marked `@Test(.timing ...)`: run after the others, one at a time.
TIMING_TESTS := $(shell grep -h -A1 '@Test.\.timing' Tests/SallyportSystemTests/*.swift | grep -o 'func [A-Za-z0-9_]*' | cut -c6- | sort -u | paste -sd'|')
TEST_TMP := $(CURDIR)/.build/test-tmp
# Counts the allocations of a process it is preloaded into: the allocation ceilings of the release
# binary (AllocationTests) read it.
MALLOC_COUNTER := $(CURDIR)/.build/malloc-counter.so
SYSTEM_TEST_ENV := $(PAM_TEST_ENV) TMPDIR=$(TEST_TMP)/ SALLYPORT_SYSTEM_TEST_WIDTH=$(SYSTEM_TEST_WIDTH) SALLYPORT_MALLOC_COUNTER=$(MALLOC_COUNTER) \
	SALLYPORT_RELEASE_BINARY=$(CURDIR)/.build/release/sallyport

alloc-counter: $(MALLOC_COUNTER)
$(MALLOC_COUNTER): Tests/AllocationCounter/malloc_counter.c
	mkdir -p .build && $(CC) -O2 -shared -fPIC -o $@ $<

unit: deps-run
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build --parallel --filter '$(UNIT_TEST_TARGETS)'

# The package tests install, run and purge the .deb that `deb` builds (root, as CI has).
test: deps-test deb alloc-counter
	$(SWIFT) build --build-tests
	rm -rf $(TEST_TMP) && mkdir -p $(TEST_TMP) && chmod 1777 $(TEST_TMP)
	TMPDIR=$(TEST_TMP)/ $(SWIFT) test --skip-build --filter '$(UNIT_TEST_TARGETS)'
	Tests/Fixtures/make-pam-fixtures.sh $(PAM_FIXTURES)
	env $(SYSTEM_TEST_ENV) $(SWIFT) test --skip-build --filter 'SallyportSystemTests\.' --skip '/($(TIMING_TESTS))\('
	env $(SYSTEM_TEST_ENV) SWT_EXPERIMENTAL_MAXIMUM_PARALLELIZATION_WIDTH=1 $(SWIFT) test --skip-build --filter 'SallyportSystemTests\..*/($(TIMING_TESTS))\('
	$(MAKE) --no-print-directory cluster-run

# The scale-out test (Tests/Cluster): HAProxy with send-proxy-v2 and /readyz health checks in front of
# three instances, in a network namespace of its own (root); figures in bench-results/cluster.json.
cluster: deps-test
	$(SWIFT) build --product sallyport
	$(MAKE) --no-print-directory cluster-run
cluster-run:
	/usr/bin/python3 Tests/Cluster/cluster_test.py "$$($(SWIFT) build --show-bin-path)/sallyport" --json bench-results/cluster.json

# Sallyport against microsocks and Dante (and a direct connection), one run, one load generator:
# prints a table with ratios to the best peer and writes bench-results/latest.json.
BENCH_PEERS := microsocks dante-server stunnel4 openssl
bench: deps-test
	$(call apt_install,$(BENCH_PEERS))
	$(SWIFT) build $(RELEASE)
	python3 Tests/Benchmarks/bench.py "$$($(SWIFT) build $(RELEASE) --show-bin-path)" $(BENCH_ARGS)

# Where the proxies' CPU goes (Sallyport, the bare NIO relay, microsocks, Dante), by system call and
# by code, from system-wide perf samples: prints tables and writes bench-results/profile.json.
profile: deps-test
	$(call apt_install,$(BENCH_PEERS) linux-perf)
	$(SWIFT) build $(RELEASE)
	python3 Tests/Benchmarks/cpu_profile.py "$$($(SWIFT) build $(RELEASE) --show-bin-path)" $(PROFILE_ARGS)

# PAM logins per second through pam_matrix (a benchmark, not a test).
bench-pam: deps-test
	Tests/Benchmarks/pam-logins.sh

# libFuzzer (swiftc -sanitize=fuzzer, with AddressSanitizer): each target from its committed seed
# corpus; new inputs go to .build-fuzz/corpus, crashes to .build-fuzz/crashes (add each as
# Tests/Fuzz/Crashes/TARGET-NAME: the tests replay them).
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := negotiation udp-header config policy proxy-header user-file upstream-handshake certificate tls-handshake
fuzz: deps-test
	$(SWIFT) build --product sallyport-fuzz --scratch-path .build-fuzz -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING
	@mkdir -p .build-fuzz/crashes
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p .build-fuzz/corpus/$$t; \
	  echo "== fuzzing $$t for $(FUZZ_SECONDS) s"; \
	  SALLYPORT_FUZZ_TARGET=$$t .build-fuzz/debug/sallyport-fuzz -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	    -artifact_prefix=.build-fuzz/crashes/$$t- .build-fuzz/corpus/$$t Tests/Fuzz/Corpus/$$t >.build-fuzz/$$t.log 2>&1; \
	  status=$$?; \
	  grep -E '^#[0-9]+.*(DONE|pulse)' .build-fuzz/$$t.log | tail -n 1; \
	  grep -E 'stat::number_of_executed_units|stat::peak_rss_mb' .build-fuzz/$$t.log; \
	  if [ $$status -ne 0 ]; then tail -n 40 .build-fuzz/$$t.log; echo "fuzz target $$t failed: see .build-fuzz/crashes"; exit 1; fi; \
	done

# The whole test suite under AddressSanitizer, then under ThreadSanitizer (two builds of their own).
# pam_wrapper and nss_wrapper dlopen libc with RTLD_DEEPBIND, which the sanitizers cannot run with:
# their own switches turn it off (pam_wrapper 1.1 reads the one named UID_WRAPPER_DISABLE_DEEPBIND).
# Every process's reports (the tests' and the servers they start) go to files, which fail the run.
# Memory bounds do not hold under a sanitizer's shadow memory: SALLYPORT_SANITIZER tells the tests.
SANITIZER_REPORTS := $(CURDIR)/.build-sanitizer-reports
SANITIZE_ENV := $(PAM_TEST_ENV) UID_WRAPPER_DISABLE_DEEPBIND=1 NSS_WRAPPER_DISABLE_DEEPBIND=1 \
	LSAN_OPTIONS=suppressions=$(CURDIR)/Tests/Fixtures/lsan.supp:print_suppressions=0:exitcode=0 \
	ASAN_OPTIONS=log_path=$(SANITIZER_REPORTS)/asan \
	TSAN_OPTIONS=log_path=$(SANITIZER_REPORTS)/tsan:suppressions=$(CURDIR)/Tests/Fixtures/tsan.supp
# Runs the tests of build $(1) (address or thread) one at a time (side by side, a sanitized build's
# hundreds of threads stalled the whole run for a minute on two cores, past any sensible timeout);
# notes a failed run in the reports folder, so that both runs happen before `sanitize` fails.
define sanitizer_run
	env $(SANITIZE_ENV) SALLYPORT_SANITIZER=$(1) $(SWIFT) test --skip-build --no-parallel --sanitize=$(1) --scratch-path .build-$(2) \
	  || echo "$(2): tests failed" >>$(SANITIZER_REPORTS)/failed
	@if grep -l -E 'ERROR: |WARNING: ThreadSanitizer' $(SANITIZER_REPORTS)/$(2).* >/dev/null 2>&1; then \
	  cat $(SANITIZER_REPORTS)/$(2).*; echo "$(2): reports above" | tee -a $(SANITIZER_REPORTS)/failed; \
	else echo "$(2): no reports"; fi
endef
sanitize: deps-test deb
	$(call apt_install,libclang-rt-14-dev)
	Tests/Fixtures/make-pam-fixtures.sh $(PAM_FIXTURES)
	rm -rf $(SANITIZER_REPORTS) && mkdir -p $(SANITIZER_REPORTS) && chmod 1777 $(SANITIZER_REPORTS)
	$(SWIFT) build --build-tests --sanitize=address --scratch-path .build-asan
	$(call sanitizer_run,address,asan)
	$(SWIFT) build --build-tests --sanitize=thread --scratch-path .build-tsan
	$(call sanitizer_run,thread,tsan)
	@if [ -s $(SANITIZER_REPORTS)/failed ]; then cat $(SANITIZER_REPORTS)/failed; exit 1; fi
	@echo "sanitize: both runs clean"

# Not part of `make test`: bulk, short, UDP, right and wrong passwords, slowloris clients and a
# reload every 10 s for SOAK_SECONDS; fails on a failed session, growth after the warm-up, or
# access-log lines that do not match the sessions opened. CSV and plot in bench-results/soak.
SOAK_SECONDS ?= 600
soak: deps-test
	$(call apt_install,python3-matplotlib)
	$(SWIFT) build $(RELEASE)
	Tests/Fixtures/make-pam-fixtures.sh $(PAM_FIXTURES)
	/usr/bin/python3 Tests/Soak/soak.py "$$($(SWIFT) build $(RELEASE) --show-bin-path)/sallyport" \
	  --seconds $(SOAK_SECONDS) --fixtures $(PAM_FIXTURES) --out bench-results/soak

DEB_PACKAGES := dpkg-dev binutils
deb: deps-run
	$(call apt_install,$(DEB_PACKAGES))
	$(SWIFT) build $(RELEASE) --static-swift-stdlib
	packaging/build-deb.sh "$(VERSION)" .build/release/sallyport dist

clean:
	rm -rf .build dist
