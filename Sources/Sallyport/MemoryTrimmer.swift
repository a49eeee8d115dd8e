import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// Gives memory back to the system after a crowd of sessions has gone. glibc's malloc keeps what
/// closed sessions freed in its arenas (about 9 KiB a session); every `interval`, if the sessions
/// alive have fallen to half of a peak of at least `threshold`, `malloc_trim` returns the free
/// pages. It runs on a thread pool, never on an event loop.
final class MemoryTrimmer: Sendable {
    private let registry: SessionRegistry
    private let threshold: Int
    private let pool: NIOThreadPool
    private let task: RepeatedTask

    init(registry: SessionRegistry, eventLoop: any EventLoop, pool: NIOThreadPool, interval: TimeAmount = .seconds(5), threshold: Int = 1000) {
        self.registry = registry
        self.threshold = threshold
        self.pool = pool
        let mallocTrim = Self.trim
        self.task = eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
            let (peak, now) = registry.takePeak()
            guard peak >= threshold, now <= peak / 2 else { return }
            pool.submit { _ in _ = mallocTrim?(0) }
        }
    }

    /// glibc's `malloc_trim`, looked up at run time: `malloc.h` is not part of Swift's Glibc module.
    private static let trim: (@convention(c) (Int) -> Int32)? = {
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "malloc_trim") else { return nil }
        return unsafeBitCast(symbol, to: (@convention(c) (Int) -> Int32).self)
    }()

    func stop() {
        task.cancel()
    }
}
