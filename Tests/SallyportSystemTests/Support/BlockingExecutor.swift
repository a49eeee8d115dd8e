import SallyportTestSupport
import Foundation

/// Runs the bodies of system tests on threads of their own, never on Swift's cooperative pool.
///
/// The pool has one thread per core (two on CI): a test that blocks in `recv`, `waitpid` or a
/// blocking HTTP call there stalls every other test's waits. Each job this executor is given runs
/// on an idle thread of its own, or on a new one when every thread is busy, so a blocking call
/// holds only its own thread. Threads stay for the life of the test process.
final class BlockingTestExecutor: TaskExecutor, @unchecked Sendable {
    // @unchecked: `jobs`, `idle` and `threads` are only touched with `condition` held.
    static let shared = BlockingTestExecutor()

    private let condition = NSCondition()
    private var jobs: [UnownedJob] = []
    private var idle = 0
    private var threads = 0

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        condition.lock()
        jobs.append(job)
        if jobs.count > idle {
            threads += 1
            let thread = Thread { [self] in work() }
            thread.name = "test-blocking-\(threads)"
            thread.start()
        } else {
            condition.signal()
        }
        condition.unlock()
    }

    private func work() {
        condition.lock()
        while true {
            while jobs.isEmpty {
                idle += 1
                condition.wait()
                idle -= 1
            }
            let job = jobs.removeFirst()
            condition.unlock()
            job.runSynchronously(on: asUnownedTaskExecutor())
            condition.lock()
        }
    }
}
