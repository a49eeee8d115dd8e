import NIOConcurrencyHelpers

#if canImport(Glibc)
import Glibc
#endif

/// The file the access log goes to (`log.access_file`): appended to one line per `write(2)`, and
/// reopened by path on SIGUSR1 (after logrotate has moved it away) or when a reload names another
/// file. Without a file, lines go to standard error with the others.
public final class AccessLogFile: Sendable {
    private struct State {
        var path: String?
        var descriptor: Int32 = -1
    }

    private let state = NIOLockedValueBox(State())

    public init() {}

    /// The file being written, if any.
    public var path: String? { state.withLockedValue { $0.path } }

    /// Writes to `path` from now on (nil: standard error). The file is created (mode 0640) when
    /// missing. Throws, leaving the current file in use, when it cannot be opened.
    public func open(_ path: String?) throws {
        var descriptor: Int32 = -1
        if let path {
            descriptor = Glibc.open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o640)
            guard descriptor >= 0 else {
                throw StartupError(description: "cannot open the access log \(path): \(String(cString: strerror(errno)))")
            }
        }
        let old = state.withLockedValue { state in
            defer { state = State(path: path, descriptor: descriptor) }
            return state.descriptor
        }
        if old >= 0 { close(old) }
    }

    /// Opens the same path again: a file moved away is left to whoever moved it.
    public func reopen() throws {
        try open(path)
    }

    /// Writes one line (ending in a newline) to the file, or to standard error without one.
    public func write(_ line: String) {
        state.withLockedValue { state in
            guard state.descriptor >= 0 else { return LineLogHandler.standardError(line) }
            LineLogHandler.write(line, to: state.descriptor)
        }
    }

    deinit {
        let descriptor = state.withLockedValue { $0.descriptor }
        if descriptor >= 0 { close(descriptor) }
    }
}
