import ArgumentParser
import CSystemShims
import Logging
import Sallyport
import ServiceLifecycle
import UnixSignals

#if canImport(Glibc)
import Glibc
#endif

@main
struct SallyportCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sallyport",
        abstract: "A SOCKS5 proxy server (RFC 1928, RFC 1929).",
        discussion: """
            With no configuration file, Sallyport serves on 127.0.0.1:1080 with no authentication, \
            reachable from this host only.
            """,
        version: sallyportVersion,
        subcommands: [Run.self, CheckConfig.self, CheckAuth.self, Passwd.self],
        defaultSubcommand: Run.self)
}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the server (the default).")

    @Option(name: .long, help: ArgumentHelp("The YAML configuration file (see conf/sallyport.yaml).", valueName: "path"))
    var config: String?

    @Option(
        name: .long,
        help: ArgumentHelp(
            "Listen on HOST:PORT ([V6]:PORT for IPv6) instead of the configured listeners; repeatable. Port 0 picks a free port.",
            valueName: "host:port"))
    var listen: [String] = []

    @Option(name: .long, help: ArgumentHelp("Log level: trace, debug, info, notice, warning, error, critical.", valueName: "level"))
    var logLevel: String?

    @Option(name: .long, help: ArgumentHelp("Log format: logfmt or json.", valueName: "format"))
    var logFormat: String?

    func validate() throws {
        for address in listen {
            if case .failure(let error) = ConfigurationLoader.parseListenAddress(address) {
                throw ValidationError("--listen \(error)")
            }
        }
        if let logLevel, LogConfiguration.Level(rawValue: logLevel) == nil {
            throw ValidationError("--log-level '\(logLevel)': expected one of \(LogConfiguration.Level.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        if let logFormat, LogConfiguration.Format(rawValue: logFormat) == nil {
            throw ValidationError("--log-format '\(logFormat)': expected logfmt or json")
        }
    }

    func run() async throws {
        // Before any thread looks a name up: names are looked up as given, never through
        // resolv.conf's search domains, so that what the rules saw is what is resolved.
        SystemResolver.lookUpNamesAsGiven()
        var configuration = try loadConfiguration(config)
        // From here on the process holds what it read (and will hold passwords in flight): no core
        // dumps, no ptrace by other users, /proc files readable by root only.
        if sallyport_set_nondumpable() != 0 {
            printError("sallyport: warning: cannot make the process non-dumpable: \(String(cString: strerror(errno)))")
        }
        if !listen.isEmpty { configuration.listeners = Self.listeners(listen, like: configuration.listeners.first) }
        if let error = configuration.validate().errors.first {
            printError("sallyport: \(listen.isEmpty ? "" : "--listen: ")\(error.message)")
            throw ExitCode.failure
        }
        if let logLevel, let level = LogConfiguration.Level(rawValue: logLevel) { configuration.log.level = level }
        if let logFormat, let format = LogConfiguration.Format(rawValue: logFormat) { configuration.log.format = format }

        let files = raiseOpenFileLimit()
        let log = configuration.log
        // Under systemd, journald reads each line's priority from a <N> prefix (journalctl -p).
        let stream = getenv("JOURNAL_STREAM").map { ["JOURNAL_STREAM": String(cString: $0)] } ?? [:]
        let journal = LineLogHandler.standardErrorIsJournal(environment: stream)
        // The access log goes to its own file when the configuration names one.
        let accessFile = AccessLogFile()
        do {
            try accessFile.open(log.accessFile)
        } catch {
            printError("sallyport: \(error)")
            throw ExitCode.failure
        }
        LoggingSystem.bootstrap { label in
            let toFile = label == "sallyport.access"
            return LineLogHandler(
                label: label, level: log.level.loggerLevel, format: log.format, syslogPrefix: journal && !toFile,
                sink: toFile ? accessFile.write : LineLogHandler.standardError)
        }
        let logger = Logger(label: "sallyport")
        logger.debug("open file limit", metadata: ["limit": "\(files)"])
        let server = SallyportServer(
            configuration: configuration, logger: logger, accessLogger: Logger(label: "sallyport.access"))
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: [.init(service: server)],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: Logger(label: "sallyport.lifecycle", factory: { _ in SwiftLogNoOpLogHandler() })))
        // SIGHUP: read the file again; a file that fails keeps the running configuration.
        let reloads = Task {
            for await _ in await UnixSignalsSequence(trapping: .sighup) {
                guard let config else {
                    logger.warning("SIGHUP ignored: the server runs on the embedded default configuration, with no file to read")
                    continue
                }
                // systemd hears of the reload, and of its outcome in STATUS.
                server.notifier.reloading()
                do {
                    var next = try ConfigurationLoader.load(path: config)
                    // The addresses stay --listen's; methods and the rest follow the file.
                    if !listen.isEmpty { next.listeners = Self.listeners(listen, like: next.listeners.first) }
                    try await reload(server, to: next, accessFile: accessFile)
                    server.notifier.ready(status: "configuration reloaded from \(config)")
                } catch {
                    logger.error("reload failed; keeping the running configuration", metadata: ["errors": "\(error)"])
                    let first = "\(error)".split(separator: "\n").first.map(String.init) ?? "\(error)"
                    server.notifier.ready(status: "reload failed, running configuration kept: \(first)")
                    server.reloadFailed(first)
                }
            }
        }
        defer { reloads.cancel() }
        // SIGUSR1: open the access log's file again (logrotate has moved it away).
        let reopens = Task {
            for await _ in await UnixSignalsSequence(trapping: .sigusr1) {
                do {
                    try accessFile.reopen()
                    logger.info("access log reopened", metadata: ["path": "\(accessFile.path ?? "standard error")"])
                } catch {
                    logger.error("access log not reopened; writing on to the old file", metadata: ["error": "\(error)"])
                }
            }
        }
        defer { reopens.cancel() }
        do {
            try await group.run()
        } catch {
            logger.critical("cannot run", metadata: ["error": "\(error)"])
            throw ExitCode.failure
        }
    }
}

struct CheckConfig: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-config",
        abstract: "Check a configuration file: exit 0 when it is valid, else print every problem and exit 1.")

    @Argument(help: ArgumentHelp("The YAML configuration file.", valueName: "path"))
    var path: String

    func run() throws {
        do {
            let configuration = try ConfigurationLoader.load(path: path)
            let listeners = configuration.listeners.map(\.addressDescription).joined(separator: ", ")
            let tls = configuration.checkTLSFiles()
            for warning in configuration.warnings + tls.warnings { printError("warning: \(warning)") }
            if let error = tls.error {
                printError("\(path): \(error)")
                throw ExitCode.failure
            }
            print("\(path): valid; listeners: \(listeners); \(configuration.policySummary)")
        } catch let exit as ExitCode {
            throw exit
        } catch {
            printError("\(error)")
            throw ExitCode.failure
        }
    }
}

/// Raises the soft limit on open files to the hard limit: every relayed session holds two
/// descriptors, and the usual soft limit of 1,024 would cap the server near 500 sessions. Returns
/// the limit in force.
func raiseOpenFileLimit() -> UInt64 {
    var limit = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 0 }
    if limit.rlim_cur < limit.rlim_max {
        var raised = limit
        raised.rlim_cur = limit.rlim_max
        if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { return UInt64(raised.rlim_cur) }
    }
    return UInt64(limit.rlim_cur)
}

/// The configuration in `path`, or the embedded default without one; a file that fails prints
/// its problems and exits 1.
func loadConfiguration(_ path: String?) throws -> ServerConfiguration {
    guard let path else { return .embeddedDefault }
    do {
        return try ConfigurationLoader.load(path: path)
    } catch {
        printError("sallyport: the configuration is not valid:\n\(error)")
        throw ExitCode.failure
    }
}

extension Run {
    /// The listeners `--listen` names, each set up as the file's first listener (its methods,
    /// SOCKS4, PROXY protocol), at the given address.
    static func listeners(_ addresses: [String], like template: ListenerConfiguration?) -> [ListenerConfiguration] {
        addresses.compactMap { text in
            guard case .success(let address) = ConfigurationLoader.parseListenAddress(text) else { return nil }
            var listener = template ?? ListenerConfiguration(host: address.host, port: address.port, methods: [.none])
            listener.host = address.host
            listener.port = address.port
            return listener
        }
    }
}

func printError(_ text: String) {
    LineLogHandler.standardError(text + "\n")
}

/// Takes a reloaded configuration: a new access-log file first (a file that cannot be opened fails
/// the reload), then the server; the old file comes back if the server refuses the configuration.
func reload(_ server: SallyportServer, to next: ServerConfiguration, accessFile: AccessLogFile) async throws {
    let previous = accessFile.path
    guard next.log.accessFile != previous else { return try await server.reload(next) }
    try accessFile.open(next.log.accessFile)
    do {
        try await server.reload(next)
    } catch {
        try? accessFile.open(previous)
        throw error
    }
}
