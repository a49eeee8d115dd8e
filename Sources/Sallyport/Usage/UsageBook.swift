import SallyportPolicy

#if canImport(Glibc)
import Glibc
#endif

/// A quota period: a calendar day or month, in UTC.
public enum UsagePeriod: String, Sendable, Hashable, Codable, CaseIterable {
    case day, month
}

/// `quotas:` entry: the users it covers (each on their own), how many bytes (up and down together)
/// each may move per period.
public struct Quota: Sendable, Hashable {
    public var who: [EgressRule.Selector]
    public var bytes: UInt64
    public var period: UsagePeriod
    /// Where the file wrote it, for logs.
    public var line: Int?

    public init(who: [EgressRule.Selector], bytes: UInt64, period: UsagePeriod, line: Int? = nil) {
        self.who = who
        self.bytes = bytes
        self.period = period
        self.line = line
    }

    /// How logs and `/usage` name it.
    public var label: String { "\(bytes) bytes per \(period.rawValue)\(line.map { " (line \($0))" } ?? "")" }

    func applies(to subject: PolicySubject) -> Bool {
        subject.user != nil && who.contains { $0.matches(subject) }
    }
}

/// The calendar day a moment falls on, in UTC: the keys of its day and month.
public struct CalendarDay: Sendable, Hashable {
    public var day: String
    public var month: String

    public init(day: String, month: String) {
        self.day = day
        self.month = month
    }

    /// The UTC day of `seconds` since the epoch.
    public static func utc(_ seconds: Int) -> CalendarDay {
        var time = time_t(seconds)
        var parts = tm()
        gmtime_r(&time, &parts)
        let year = Int(parts.tm_year) + 1900
        let month = Int(parts.tm_mon) + 1
        let monthKey = "\(year)-\(month < 10 ? "0" : "")\(month)"
        let day = Int(parts.tm_mday)
        return CalendarDay(day: "\(monthKey)-\(day < 10 ? "0" : "")\(day)", month: monthKey)
    }

    public static var today: CalendarDay { utc(Int(time(nil))) }

    func key(_ period: UsagePeriod) -> String { period == .day ? day : month }
}

/// Every user's byte totals: this day's, this month's and all time, as a value. What the state
/// file holds.
public struct UsageBook: Sendable, Hashable, Codable {
    public struct Counts: Sendable, Hashable, Codable {
        public var up: UInt64 = 0
        public var down: UInt64 = 0
        public var bytes: UInt64 { up &+ down }
    }

    /// One period's counts; `start` is its key (`2026-11-27`, `2026-11`).
    public struct Period: Sendable, Hashable, Codable {
        public var start: String
        public var up: UInt64 = 0
        public var down: UInt64 = 0
    }

    public struct Account: Sendable, Hashable, Codable {
        public var day: Period
        public var month: Period
        public var total = Counts()
    }

    /// The file format's version.
    public var version = 1
    public var users: [String: Account] = [:]

    public init() {}

    /// Counts `up` and `down` bytes of `user` on `today`; a period that has ended starts again.
    public mutating func add(_ user: String, up: UInt64, down: UInt64, on today: CalendarDay) {
        var account = users[user] ?? Account(day: Period(start: today.day), month: Period(start: today.month))
        if account.day.start != today.day { account.day = Period(start: today.day) }
        if account.month.start != today.month { account.month = Period(start: today.month) }
        account.day.up &+= up
        account.day.down &+= down
        account.month.up &+= up
        account.month.down &+= down
        account.total.up &+= up
        account.total.down &+= down
        users[user] = account
    }

    /// Starts `user`'s day and month again (an operator lifting a quota early); the total stays.
    /// False when the book has no such user.
    public mutating func resetPeriods(of user: String, on today: CalendarDay) -> Bool {
        guard var account = users[user] else { return false }
        account.day = Period(start: today.day)
        account.month = Period(start: today.month)
        users[user] = account
        return true
    }

    /// The bytes `user` moved in the current `period` (0 when the recorded one has ended).
    public func used(_ user: String, _ period: UsagePeriod, on today: CalendarDay) -> UInt64 {
        guard let account = users[user] else { return 0 }
        let recorded = period == .day ? account.day : account.month
        return recorded.start == today.key(period) ? recorded.up &+ recorded.down : 0
    }

    /// The first quota of `subject` it has used up, if any.
    public func exceeded(_ subject: PolicySubject, quotas: [Quota], on today: CalendarDay) -> Quota? {
        guard let user = subject.user else { return nil }
        return quotas.first { $0.applies(to: subject) && used(user, $0.period, on: today) >= $0.bytes }
    }

    /// Whether the book could have come from this server: nothing a corrupt file slips through.
    var isWellFormed: Bool {
        version == 1 && users.allSatisfy { name, account in
            !name.isEmpty && account.total.up >= account.month.up && account.total.down >= account.month.down
                && CalendarDay.isKey(account.day.start, parts: 3) && CalendarDay.isKey(account.month.start, parts: 2)
        }
    }
}

extension CalendarDay {
    /// `YYYY-MM` (2 parts) or `YYYY-MM-DD` (3).
    static func isKey(_ text: String, parts: Int) -> Bool {
        let fields = text.split(separator: "-", omittingEmptySubsequences: false)
        return fields.count == parts && fields.allSatisfy { !$0.isEmpty && $0.allSatisfy(\.isASCII) && Int($0) != nil }
    }
}
