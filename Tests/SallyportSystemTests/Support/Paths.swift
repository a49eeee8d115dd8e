import SallyportTestSupport
import Foundation

/// A temporary file holding `contents`, in this run's directory (removed at exit, or by the next
/// run when this one is killed).
func temporaryFile(_ contents: String, suffix: String = ".yaml") throws -> String {
    let path = TestRun.current.temporaryPath("file") + suffix
    try contents.write(toFile: path, atomically: true, encoding: .utf8)
    return path
}

/// A new directory in this run's temporary directory.
func temporaryDirectory(_ name: String) throws -> String {
    let path = TestRun.current.temporaryPath(name)
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
    return path
}
