import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Keeps the usage ledger: loads it from `state_dir` at start, has running sessions report their
/// bytes every `usage.check_interval` (closing those of users over a quota), saves it every
/// `usage.save_interval` and at shutdown. File work runs on a thread of its own.
final class UsageKeeper: Sendable {
    let ledger: UsageLedger
    private let registry: SessionRegistry
    private let logger: Logger
    private struct State {
        var settings: UsageSettings
        /// Where the totals are saved; nil: in memory only.
        var directory: String?
        var check: RepeatedTask?
        var save: RepeatedTask?
        var lastSave: String?
        var eventLoop: (any EventLoop)?
        /// Some listener authenticates users: without any, no session has bytes to count, and
        /// no timer runs.
        var active = false
    }

    private let state: NIOLockedValueBox<State>
    /// Where saves run, off the event loops.
    private let files: NIOThreadPool

    init(ledger: UsageLedger, settings: UsageSettings, registry: SessionRegistry, logger: Logger, files: NIOThreadPool) {
        self.ledger = ledger
        self.registry = registry
        self.logger = logger
        self.files = files
        self.state = NIOLockedValueBox(State(settings: settings))
    }

    /// Where the totals are saved now (nil: memory only), and when they last were.
    var persistence: (directory: String?, lastSave: String?) { state.withLockedValue { ($0.directory, $0.lastSave) } }

    var quotas: [Quota] { state.withLockedValue { $0.settings.quotas } }

    /// Loads the saved totals and starts the timers. `persist`: some listener authenticates users
    /// (else nothing is ever counted, and `state_dir` is left alone). Throws when quotas are set
    /// and the totals cannot be kept: a restart would forget what each user used.
    func start(on eventLoop: any EventLoop, persist: Bool) throws {
        state.withLockedValue {
            $0.eventLoop = eventLoop
            $0.active = persist
        }
        if persist, let problem = openStore() {
            guard quotas.isEmpty else { throw StartupError(description: "state_dir: \(problem); quotas need the usage totals to outlive a restart") }
            logger.warning("usage totals are kept in memory only: state_dir: \(problem)")
        }
        schedule()
    }

    /// Makes `state_dir` ready and loads the saved totals; the reason when it cannot be used.
    private func openStore() -> String? {
        guard let configured = state.withLockedValue({ $0.settings.stateDirectory }) else { return nil }
        if let problem = UsageStore.prepare(configured) { return problem }
        let withQuotas = !quotas.isEmpty
        let loaded = UsageStore.load(from: configured, now: LineLogHandler.timestamp(), keepCorrupt: withQuotas)
        if loaded.lost {
            // With quotas, starting from zero would hand every user a fresh allowance: refuse.
            return loaded.errors.joined(separator: "; ")
                + "; move the files aside (or restore them from a backup) to start counting from zero"
        }
        for error in loaded.errors { logger.error("\(error)") }
        for note in loaded.notes { logger.info("\(note)") }
        ledger.replace(with: loaded.book)
        state.withLockedValue { $0.directory = configured }
        return nil
    }

    /// A reload: new quotas and intervals (a new `state_dir` waits for a restart). `active`: some
    /// listener authenticates users.
    func update(_ settings: UsageSettings, active: Bool) -> String? {
        let (changedDirectory, opening) = state.withLockedValue { state -> (Bool, Bool) in
            let changed = state.settings.stateDirectory != settings.stateDirectory
            // Users authenticate from now on: the totals are loaded before any is counted.
            let opening = active && !state.active && state.directory == nil
            state.settings = settings
            state.active = active
            return (changed && !opening, opening)
        }
        var warning: String?
        if opening, let problem = openStore() { warning = "usage totals are kept in memory only: state_dir: \(problem)" }
        schedule()
        return warning ?? (changedDirectory ? "state_dir changed; it takes effect at the next restart" : nil)
    }

    private func schedule() {
        let (settings, eventLoop, active, old) = state.withLockedValue { state in
            let old = (state.check, state.save)
            state.check = nil
            state.save = nil
            return (state.settings, state.eventLoop, state.active, old)
        }
        old.0?.cancel()
        old.1?.cancel()
        guard let eventLoop, active else { return }
        let check = eventLoop.scheduleRepeatedTask(initialDelay: settings.checkInterval, delay: settings.checkInterval) { [self] _ in
            tick(quotas: settings.quotas)
        }
        let saving = eventLoop.scheduleRepeatedAsyncTask(initialDelay: settings.saveInterval, delay: settings.saveInterval) { [self] _ in
            self.save(on: eventLoop)
        }
        state.withLockedValue {
            $0.check = check
            $0.save = saving
        }
    }

    /// Every running session reports its bytes (and, with quotas, closes when its user is over one).
    @discardableResult
    func tick(quotas: [Quota]?, on eventLoop: (any EventLoop)? = nil) -> EventLoopFuture<Void>? {
        let sessions = registry.all()
        let reports = sessions.map { session in
            session.eventLoop.submit { session.value.usageTick(quotas: quotas ?? []) }
        }
        guard let eventLoop else { return nil }
        return EventLoopFuture.andAllComplete(reports, on: eventLoop)
    }

    /// Running sessions report, then the book is written if it changed.
    func save(on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        let reported = tick(quotas: nil, on: eventLoop) ?? eventLoop.makeSucceededVoidFuture()
        return reported.flatMap { [self] in
            guard let directory = persistence.directory, let book = ledger.takeChanges() else { return eventLoop.makeSucceededVoidFuture() }
            return files.runIfActive(eventLoop: eventLoop) { [self] in
                do {
                    try UsageStore.save(book, to: directory)
                    let now = LineLogHandler.timestamp()
                    state.withLockedValue { $0.lastSave = now }
                } catch {
                    ledger.markUnsaved()
                    logger.error("cannot save the usage totals; the previous snapshot stays: \(error)")
                }
            }
            .recover { _ in }
        }
    }

    /// The report for `/usage`, once running sessions have reported.
    func report(on eventLoop: any EventLoop) -> EventLoopFuture<UsageReport> {
        let reported = tick(quotas: nil, on: eventLoop) ?? eventLoop.makeSucceededVoidFuture()
        return reported.map { [self] in
            var report = ledger.report(quotas: quotas)
            let (directory, lastSave) = persistence
            report.stateFile = directory.map(UsageStore.file(in:))
            report.lastSaved = lastSave
            return report
        }
    }

    /// At shutdown, once sessions are gone: stop the timers and save.
    func stop() async {
        let (timers, eventLoop) = state.withLockedValue { state in
            defer { state.check = nil; state.save = nil }
            return ((state.check, state.save), state.eventLoop)
        }
        timers.0?.cancel()
        timers.1?.cancel()
        guard let eventLoop else { return }
        try? await save(on: eventLoop).get()
    }
}
