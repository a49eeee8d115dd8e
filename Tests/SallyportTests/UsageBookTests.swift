import SallyportTestSupport
import Foundation
import SallyportPolicy
import Testing

@testable import Sallyport

/// The usage totals as values, and their state file, without a server.
@Suite(.timeLimit(.minutes(1))) struct UsageBookTests {
    let monday = CalendarDay(day: "2026-11-30", month: "2026-11")
    let tuesday = CalendarDay(day: "2026-12-01", month: "2026-12")

    @Test func calendarDaysAreUTC() {
        #expect(CalendarDay.utc(0) == CalendarDay(day: "1970-01-01", month: "1970-01"))
        #expect(CalendarDay.utc(1_796_083_199) == CalendarDay(day: "2026-11-30", month: "2026-11"))
        #expect(CalendarDay.utc(1_796_083_200) == CalendarDay(day: "2026-12-01", month: "2026-12"))
    }

    @Test func periodsStartAgainAndTotalsKeepCounting() {
        var book = UsageBook()
        book.add("alice", up: 100, down: 1000, on: monday)
        book.add("alice", up: 1, down: 2, on: monday)
        #expect(book.used("alice", .day, on: monday) == 1103)
        #expect(book.used("alice", .month, on: monday) == 1103)
        // A new day and a new month: both periods read 0 until counted again; the total keeps all.
        #expect(book.used("alice", .day, on: tuesday) == 0)
        book.add("alice", up: 5, down: 5, on: tuesday)
        #expect(book.users["alice"]?.day == UsageBook.Period(start: "2026-12-01", up: 5, down: 5))
        #expect(book.users["alice"]?.total == UsageBook.Counts(up: 106, down: 1007))
        #expect(book.used("bob", .day, on: monday) == 0)
        // An operator starts the periods again: the total stays.
        let reset = book.resetPeriods(of: "alice", on: tuesday)
        #expect(reset)
        #expect(book.used("alice", .day, on: tuesday) == 0 && book.used("alice", .month, on: tuesday) == 0)
        #expect(book.users["alice"]?.total == UsageBook.Counts(up: 106, down: 1007))
        let unknown = book.resetPeriods(of: "bob", on: tuesday)
        #expect(!unknown)
    }

    @Test func quotasApplyToTheUsersTheyNameEachOnTheirOwn() {
        var book = UsageBook()
        book.add("alice", up: 600, down: 500, on: monday)
        book.add("bob", up: 10, down: 10, on: monday)
        let quotas = [
            Quota(who: [.group("interns")], bytes: 1000, period: .day),
            Quota(who: [.user("bob")], bytes: 20, period: .month),
        ]
        #expect(book.exceeded(PolicySubject(user: "alice", groups: ["interns"]), quotas: quotas, on: monday) == quotas[0])
        #expect(book.exceeded(PolicySubject(user: "alice", groups: []), quotas: quotas, on: monday) == nil)
        #expect(book.exceeded(PolicySubject(user: "bob", groups: ["interns"]), quotas: quotas, on: monday) == quotas[1])
        // The next day alice may go on; bob's month is not over.
        #expect(book.exceeded(PolicySubject(user: "alice", groups: ["interns"]), quotas: quotas, on: CalendarDay(day: "2026-11-29", month: "2026-11")) == nil)
        #expect(book.exceeded(PolicySubject(user: nil), quotas: [Quota(who: [.anyone], bytes: 1, period: .day)], on: monday) == nil)
    }

    func stateDirectory() throws -> String {
        let path = NSTemporaryDirectory() + "sallyport-usage-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    @Test func savesKeepThePreviousSnapshotAndLoadReadsTheLatest() throws {
        let directory = try stateDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        #expect(UsageStore.load(from: directory, now: "t").book == UsageBook())
        var book = UsageBook()
        book.add("alice", up: 1, down: 2, on: monday)
        try UsageStore.save(book, to: directory)
        #expect(!FileManager.default.fileExists(atPath: UsageStore.previous(in: directory)))
        var later = book
        later.add("alice", up: 10, down: 20, on: monday)
        try UsageStore.save(later, to: directory)
        #expect(UsageStore.load(from: directory, now: "t").book == later)
        #expect(try UsageStore.read(UsageStore.previous(in: directory)).get() == book)
        // No temporary file is left behind.
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory).sorted() == ["usage.json", "usage.json.prev"])
    }

    @Test(arguments: ["{\"users\":{", "", "{\"version\":1,\"users\":{\"alice\":{\"total\":{\"up\":1,\"down\":1}}}}", "{\"version\":2,\"users\":{}}"])
    func aCorruptFileIsMovedAsideAndThePreviousSnapshotTaken(corrupt: String) throws {
        let directory = try stateDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var book = UsageBook()
        book.add("alice", up: 7, down: 8, on: monday)
        try UsageStore.save(book, to: directory)
        try UsageStore.save(book, to: directory)
        try corrupt.write(toFile: UsageStore.file(in: directory), atomically: false, encoding: .utf8)
        let loaded = UsageStore.load(from: directory, now: "2026-11-30T10:00:00.000Z")
        #expect(loaded.book == book)
        #expect(loaded.errors.count == 1 && loaded.errors[0].contains("is corrupt") && loaded.errors[0].contains("usage.json.prev"))
        #expect(FileManager.default.fileExists(atPath: UsageStore.file(in: directory) + ".corrupt-2026-11-30T10:00:00.000Z"))
        #expect(!FileManager.default.fileExists(atPath: UsageStore.file(in: directory)))
    }

    @Test func quotasAndStateDirFromTheFile() throws {
        let configuration = try ConfigurationLoader.parse(yaml: """
            state_dir: /srv/sallyport
            usage: {save_interval: 10s, check_interval: 500ms}
            quotas:
              - {who: [group:interns], bytes: 5GiB, period: day}
              - {who: user:alice, bytes: 1TiB, period: month}
            """, file: "q.yaml")
        #expect(configuration.usage.stateDirectory == "/srv/sallyport")
        #expect(configuration.usage.saveInterval == .seconds(10) && configuration.usage.checkInterval == .milliseconds(500))
        #expect(configuration.usage.quotas.map(\.bytes) == [5 << 30, 1 << 40])
        #expect(configuration.usage.quotas[1].who == [.user("alice")] && configuration.usage.quotas[1].period == .month)
        #expect(configuration.warnings.contains { $0.contains("quotas count only authenticated users") })
        for (yaml, message) in [
            ("state_dir: var/lib", "state_dir: 'var/lib' is not an absolute path"),
            ("quotas: [{who: [user:a], bytes: 10 GB, period: day}]", "quotas[0].bytes: '10 GB' is not a size"),
            ("quotas: [{who: [user:a], bytes: 10, period: week}]", "quotas[0].period: 'week' is not day or month"),
            ("quotas: [{bytes: 10, period: day}]", "quotas[0]: missing key 'who'"),
            ("quotas: [{who: [anonymous], bytes: 10, period: day}]", "quotas[0].who: anonymous sessions"),
            ("usage: {check_interval: 30s}", "usage.check_interval: from 100ms to 5s"),
        ] {
            #expect(throws: ConfigurationError.self) { try ConfigurationLoader.parse(yaml: yaml, file: "q.yaml") }
            do {
                _ = try ConfigurationLoader.parse(yaml: yaml, file: "q.yaml")
            } catch {
                #expect(error.description.contains(message), "\(yaml): \(error.description)")
            }
        }
    }
}
