import NIOCore

/// What the admin listener knows beyond the configuration.
struct AdminState: Sendable {
    /// The admin listener's bound address.
    var address: SocketAddress?
    /// The admin listener, closed once the sessions have drained at shutdown.
    var listener: AdminListener?
    /// The SOCKS listeners' bound addresses (a port 0 in the file is a real port here).
    var listeners: [SocketAddress] = []
    let started = NIODeadline.now()
    var lastReload = "none since start"
}

extension SallyportServer {
    /// Binds the admin listener `settings` describe.
    func bindAdmin(_ settings: AdminSettings) async throws {
        register(try await makeAdminListener(settings))
    }

    private func makeAdminListener(_ settings: AdminSettings) async throws -> AdminListener {
        do {
            return try await AdminListener.bind(settings, backend: self, group: group, logger: logger)
        } catch {
            throw StartupError(description: "cannot listen on \(settings.addressDescription) (admin.listen): \(error); is another process using the port?")
        }
    }

    private func register(_ listener: AdminListener?) {
        admin.withLockedValue { $0.address = listener?.localAddress; $0.listener = listener }
        if let listener {
            logger.info("admin listening", metadata: ["address": "\(listener.localAddress?.endpointText ?? listener.settings.addressDescription)"])
        }
    }

    /// Makes the admin listener what a reloaded file says, before the file takes effect: bound,
    /// moved (with its connections closed) or closed. A listener the new file took away or
    /// changed never goes on serving: its socket and every connection it accepted are closed.
    /// When the new address cannot be bound, the old one is bound again (at the port it had) and
    /// the reload fails, keeping the running configuration.
    func followAdmin(_ settings: AdminSettings) async throws {
        let running = admin.withLockedValue { $0.listener }
        let wanted = settings.enabled ? settings.listenerIdentity : nil
        guard running?.settings.listenerIdentity != wanted else { return }
        // The new socket first where it can be bound beside the old; else after the old closed.
        let early = settings.enabled ? try? await makeAdminListener(settings) : nil
        let boundPort = running?.localAddress?.port
        if let running {
            await running.close()
            register(nil)
            logger.notice("admin listener closed by the reload", metadata: ["address": "\(running.settings.addressDescription)"])
        }
        guard settings.enabled else { return }
        if let early { return register(early) }
        do {
            try await bindAdmin(settings)
        } catch {
            if let running {
                var again = running.settings
                again.port = boundPort ?? again.port
                try? await bindAdmin(again)
            }
            throw error
        }
    }
}

extension AdminSettings {
    /// What binding the admin listener depends on: where, and its connections' bounds.
    struct ListenerIdentity: Hashable {
        var address: String
        var limits: [Int64]
    }

    var listenerIdentity: ListenerIdentity {
        ListenerIdentity(
            address: addressDescription, limits: [Int64(maxConnections), idleTimeout.nanoseconds, requestTimeout.nanoseconds])
    }
}

extension SallyportServer: AdminBackend {
    /// The admin listener's bound address, once started (nil when there is none).
    public var adminAddress: SocketAddress? { admin.withLockedValue { $0.address } }

    /// A reload that failed before it reached the server (a file that does not load): the status
    /// page and `/status` say so.
    public func reloadFailed(_ reason: String) {
        admin.withLockedValue { $0.lastReload = "failed at \(LineLogHandler.timestamp()): \(reason)" }
        metrics.configReload(succeeded: false)
    }

    /// Running and not shutting down: `/readyz` says 503 from the start of a shutdown on.
    var isReady: Bool {
        state.withLockedValue { if case .running = $0 { return true } else { return false } }
    }

    var adminToken: String? { configuration.admin.token }

    var adminHosts: [String] { configuration.admin.hosts }

    func sessions(on eventLoop: any EventLoop) -> EventLoopFuture<[SessionSnapshot]> {
        registry.snapshots(on: eventLoop)
    }

    func closeSession(id: String) -> Bool {
        registry.closeByAdmin(id: id)
    }

    func metricsText(on eventLoop: any EventLoop) -> EventLoopFuture<String> {
        let pamQueue = generation.withLockedValue { $0.checkers.pendingChecks }
        let listeners = admin.withLockedValue { $0.listeners.map(\.endpointText) }
        let perUser = configuration.admin.perUserMetrics
        return sessions(on: eventLoop).flatMap { [metrics, usage] sessions in
            // Per-user totals only when asked for: user names are labels then.
            let report = perUser ? usage.report(on: eventLoop).map(Optional.some) : eventLoop.makeSucceededFuture(nil)
            return report.map { metrics.exposition(sessions: sessions, listeners: listeners, pamQueue: pamQueue, usage: $0) }
        }
    }

    func usage(on eventLoop: any EventLoop) -> EventLoopFuture<UsageReport> {
        usage.report(on: eventLoop)
    }

    func resetUsage(user: String) -> Bool {
        let found = usage.ledger.resetPeriods(of: user)
        if found { logger.notice("usage periods started again by the admin", metadata: ["user": "\(user)"]) }
        return found
    }

    func pacFile() -> String {
        let configuration = self.configuration
        let pac = configuration.admin.pac
        let bound = admin.withLockedValue { $0.listeners.first }
        return PACFile.make(
            proxyHost: pac.host ?? bound?.ipAddress ?? "127.0.0.1", proxyPort: pac.port ?? bound?.port ?? 1080, direct: pac.direct)
    }

    func status(on eventLoop: any EventLoop) -> EventLoopFuture<AdminStatus> {
        let (generation, admin) = (self.generation.withLockedValue { $0 }, self.admin.withLockedValue { $0 })
        return sessions(on: eventLoop).map { sessions in
            var counts: [String: AdminStatus.Count] = [:]
            for session in sessions {
                let command = session.command ?? "negotiating"
                counts["\(session.listener) \(command)", default: .init(listener: session.listener, command: command, sessions: 0)].sessions += 1
            }
            return AdminStatus(
                version: sallyportVersion, uptimeSeconds: Double((NIODeadline.now() - admin.started).nanoseconds) / 1e9,
                sessions: counts.values.sorted { ($0.listener, $0.command) < ($1.listener, $1.command) }, lastReload: admin.lastReload,
                pamQueue: generation.checkers.pendingChecks, throttledClients: generation.checkers.blockedClients)
        }
    }
}
