import NIOConcurrencyHelpers
import SallyportPolicy

/// The usage totals in memory: sessions add the bytes they moved as they go (and at their end),
/// quotas are judged against them, and the keeper saves them. Outlives reloads.
public final class UsageLedger: Sendable {
    private struct State {
        var book = UsageBook()
        /// Changed since the last save.
        var dirty = false
        /// Each user's groups as their last session had them (for `/usage`; not saved).
        var groups: [String: [String]] = [:]
    }

    private let state = NIOLockedValueBox(State())
    /// Today, in UTC (injected by tests).
    let today: @Sendable () -> CalendarDay

    public init(today: @escaping @Sendable () -> CalendarDay = { CalendarDay.today }) {
        self.today = today
    }

    func add(_ user: String, groups: [String], up: UInt64, down: UInt64) {
        guard up > 0 || down > 0 else { return }
        let day = today()
        state.withLockedValue { state in
            state.book.add(user, up: up, down: down, on: day)
            state.dirty = true
            if state.groups[user] != groups { state.groups[user] = groups }
        }
    }

    /// What `/usage` shows: each user's totals for today and this month, and their quotas.
    func report(quotas: [Quota]) -> UsageReport {
        let day = today()
        let (book, groups) = state.withLockedValue { ($0.book, $0.groups) }
        let users = book.users.keys.sorted().map { user -> UsageReport.User in
            let account = book.users[user]!
            let subject = PolicySubject(user: user, groups: groups[user] ?? [])
            return UsageReport.User(
                user: user,
                day: account.day.start == day.day ? account.day : UsageBook.Period(start: day.day),
                month: account.month.start == day.month ? account.month : UsageBook.Period(start: day.month),
                total: account.total,
                quotas: quotas.filter { $0.applies(to: subject) }.map { quota in
                    let used = book.used(user, quota.period, on: day)
                    return UsageReport.QuotaState(period: quota.period.rawValue, bytes: quota.bytes, used: used, exceeded: used >= quota.bytes)
                })
        }
        return UsageReport(users: users)
    }

    /// Starts the user's day and month again; false when the user has no totals.
    func resetPeriods(of user: String) -> Bool {
        let day = today()
        return state.withLockedValue { state in
            let found = state.book.resetPeriods(of: user, on: day)
            if found { state.dirty = true }
            return found
        }
    }

    /// The bytes `subject` may still move before one of its quotas is used up; `UInt64.max`
    /// when none applies.
    func remaining(_ subject: PolicySubject, quotas: [Quota]) -> UInt64 {
        guard let user = subject.user else { return .max }
        let day = today()
        let applying = quotas.filter { $0.applies(to: subject) }
        guard !applying.isEmpty else { return .max }
        return state.withLockedValue { state in
            applying.map { quota in
                let used = state.book.used(user, quota.period, on: day)
                return used >= quota.bytes ? 0 : quota.bytes - used
            }.min() ?? .max
        }
    }

    /// The first quota `subject` has used up.
    func exceeded(_ subject: PolicySubject, quotas: [Quota]) -> Quota? {
        guard !quotas.isEmpty, subject.user != nil else { return nil }
        let day = today()
        return state.withLockedValue { $0.book.exceeded(subject, quotas: quotas, on: day) }
    }

    public var book: UsageBook { state.withLockedValue { $0.book } }

    /// Takes a loaded book (at start, before any session).
    func replace(with book: UsageBook) {
        state.withLockedValue { $0 = State(book: book, dirty: false) }
    }

    /// The book when it changed since the last call.
    func takeChanges() -> UsageBook? {
        state.withLockedValue { state in
            guard state.dirty else { return nil }
            state.dirty = false
            return state.book
        }
    }

    /// A save failed: the changes are still to be saved.
    func markUnsaved() { state.withLockedValue { $0.dirty = true } }
}

/// `GET /usage`: every user's bytes today, this month (UTC) and since counting began, and where
/// they stand against their quotas.
struct UsageReport: Sendable, Codable {
    struct QuotaState: Sendable, Codable {
        var period: String
        var bytes: UInt64
        var used: UInt64
        var exceeded: Bool
    }

    struct User: Sendable, Codable {
        var user: String
        var day: UsageBook.Period
        var month: UsageBook.Period
        var total: UsageBook.Counts
        var quotas: [QuotaState]
    }

    var timezone = "UTC"
    var users: [User]
    /// The state file, when the totals are saved.
    var stateFile: String?
    var lastSaved: String?

    enum CodingKeys: String, CodingKey {
        case timezone, users
        case stateFile = "state_file"
        case lastSaved = "last_saved"
    }
}
