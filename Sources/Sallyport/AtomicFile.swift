#if canImport(Glibc)
import Glibc
#endif

/// Files replaced whole or not at all: written to a temporary file in the same directory, flushed
/// to disk, then renamed over the old one (and the directory flushed), so that a crash leaves
/// either the old file or the new one, never a part.
public enum AtomicFile {
    /// Writes `bytes` to `path`. The new file takes the old one's mode and owner (or `mode` when there
    /// was none). With `previous`, the old file is first kept under that name, itself replaced
    /// atomically, so that a good copy is always on disk.
    public static func write(_ bytes: [UInt8], to path: String, mode: mode_t = 0o640, previous: String? = nil) throws(AtomicFileError) {
        var old = stat()
        let existed = stat(path, &old) == 0
        let (fd, temporary) = try createTemporary(beside: path, mode: existed ? old.st_mode & 0o7777 : mode)
        var written = 0
        while written < bytes.count {
            let count = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + written, bytes.count - written) }
            if count < 0, errno == EINTR { continue }
            guard count > 0 else {
                let code = errno
                close(fd)
                unlink(temporary)
                throw .init("cannot write \(temporary)", code)
            }
            written += count
        }
        if existed {
            // As root (sallyport passwd), keep the file's group: the service reads it through it.
            _ = fchown(fd, old.st_uid, old.st_gid)
            _ = fchmod(fd, old.st_mode & 0o7777)
        }
        guard fsync(fd) == 0 else {
            let code = errno
            close(fd)
            unlink(temporary)
            throw .init("cannot flush \(temporary) to disk", code)
        }
        close(fd)
        if let previous, existed {
            // A hard link of the old file, renamed over the previous copy: atomic too.
            let link = previous + ".tmp-" + randomSuffix()
            if Glibc.link(path, link) == 0, rename(link, previous) != 0 { unlink(link) }
        }
        guard rename(temporary, path) == 0 else {
            let code = errno
            unlink(temporary)
            throw .init("cannot rename \(temporary) to \(path)", code)
        }
        syncDirectory(of: path)
    }

    /// A new file of our own beside `path`: a name nobody can guess, created exclusively and
    /// never through a symlink, so that a link planted in the directory redirects nothing.
    private static func createTemporary(beside path: String, mode: mode_t) throws(AtomicFileError) -> (Int32, String) {
        var code: Int32 = 0
        for _ in 0..<8 {
            let temporary = path + ".tmp-" + randomSuffix()
            let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode)
            if fd >= 0 { return (fd, temporary) }
            code = errno
            guard code == EEXIST else { throw .init("cannot create \(temporary)", code) }
        }
        throw .init("cannot create a temporary file beside \(path)", code)
    }

    private static func randomSuffix() -> String {
        String(UInt64.random(in: 0...UInt64.max), radix: 36)
    }

    /// Flushes the directory holding `path`, so that a rename survives a power cut.
    static func syncDirectory(of path: String) {
        let directory = path.lastIndex(of: "/").map { String(path[..<$0]) } ?? "."
        let fd = open(directory.isEmpty ? "/" : directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { return }
        _ = fsync(fd)
        close(fd)
    }
}

/// Why a file could not be written: what was being done, and the system's reason.
public struct AtomicFileError: Error, Sendable, CustomStringConvertible {
    public var description: String

    init(_ what: String, _ code: Int32) {
        description = "\(what): \(String(cString: strerror(code)))"
    }
}
