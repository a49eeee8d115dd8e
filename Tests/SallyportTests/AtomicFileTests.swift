import Foundation
import Testing

@testable import Sallyport

#if canImport(Glibc)
import Glibc
#endif

/// Atomic writes against a directory someone else can write to: planted links redirect nothing.
@Suite(.timeLimit(.minutes(1))) struct AtomicFileTests {
    func directory() throws -> String {
        var template = Array((NSTemporaryDirectory() + "/atomic-XXXXXX").utf8CString)
        guard let made = mkdtemp(&template) else { throw AtomicFileError("mkdtemp", errno) }
        return String(cString: made)
    }

    func contents(_ path: String) -> String? {
        guard let fd = Optional(open(path, O_RDONLY)), fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: 4096)
        let count = read(fd, &bytes, bytes.count)
        return count < 0 ? nil : String(decoding: bytes[0..<count], as: UTF8.self)
    }

    @Test func aSymlinkPlantedAtTheOldTemporaryNamesRedirectsNothing() throws {
        let dir = try directory()
        let victim = dir + "/victim"
        let target = dir + "/usage.json"
        try AtomicFile.write(Array("victim\n".utf8), to: victim)
        try AtomicFile.write(Array("old\n".utf8), to: target)
        // The names the writer used to take: PATH.tmp-PID, for the file and for the kept copy.
        symlink(victim, target + ".tmp-\(getpid())")
        symlink(victim, target + ".previous.tmp-\(getpid())")
        try AtomicFile.write(Array("new\n".utf8), to: target, previous: target + ".previous")
        #expect(contents(target) == "new\n")
        #expect(contents(target + ".previous") == "old\n")
        #expect(contents(victim) == "victim\n", "the planted links were not followed")
        var info = stat()
        #expect(lstat(target, &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG)
    }

    @Test func aWriteLeavesNoTemporaryFileBehind() throws {
        let dir = try directory()
        for index in 0..<20 { try AtomicFile.write(Array("\(index)\n".utf8), to: dir + "/state", previous: dir + "/state.previous") }
        let names = try FileManager.default.contentsOfDirectory(atPath: dir).sorted()
        #expect(names == ["state", "state.previous"])
        #expect(contents(dir + "/state") == "19\n" && contents(dir + "/state.previous") == "18\n")
    }
}
