import SallyportTestSupport
import Foundation
import Testing

@testable import Sallyport

/// `auth.file` and `listen[].auth` in the configuration file: errors name the file and line.
@Suite(.timeLimit(.minutes(1))) struct AccountsConfigurationTests {
    static let hash = "$y$j9T$2Ai6ai5cM6lROYWo09gX01$Fdz1Vb2gdR0WB2aFIitZ68b6V00MCPxf5GjPjkNlYY."

    func directory() throws -> String {
        let path = NSTemporaryDirectory() + "sallyport-accounts-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    func problems(_ yaml: String, file: String) -> String {
        do {
            _ = try ConfigurationLoader.parse(yaml: yaml, file: file)
            return ""
        } catch {
            return error.description
        }
    }

    @Test func theFileIsReadRelativeToTheConfigurationAndListenersPickTheirChecker() throws {
        let home = try directory()
        defer { try? FileManager.default.removeItem(atPath: home) }
        try "alice:\(Self.hash):staff\n".write(toFile: home + "/users", atomically: true, encoding: .utf8)
        chmod(home + "/users", 0o640)
        let configuration = try ConfigurationLoader.parse(yaml: """
            listen:
              - {address: 127.0.0.1:1080, methods: [username]}
              - {address: 127.0.0.1:1081, methods: [username], auth: pam}
            auth: {file: users, fail_delay: 250ms}
            """, file: home + "/sallyport.yaml")
        #expect(configuration.auth.file == home + "/users")
        #expect(configuration.auth.users?.accounts["alice"]?.groups == ["staff"])
        #expect(configuration.auth.failDelay == .milliseconds(250))
        #expect(configuration.listeners.map { configuration.checker(for: $0) } == [.file, .pam])
        #expect(configuration.checkersInUse == [.file, .pam])
        #expect(configuration.warnings.isEmpty, "\(configuration.warnings)")
        // Readable by everyone: a warning that says how to fix it.
        chmod(home + "/users", 0o644)
        let open = try ConfigurationLoader.parse(yaml: "methods: [username]\nauth: {file: users}\n", file: home + "/sallyport.yaml")
        #expect(open.warnings.contains { $0.contains("readable by every user") && $0.contains("chmod 0640") })
    }

    @Test func aMissingFileABadLineAndAListenerWithoutAFileAreErrors() throws {
        let home = try directory()
        defer { try? FileManager.default.removeItem(atPath: home) }
        let config = home + "/sallyport.yaml"
        let missing = problems("methods: [username]\nauth: {file: nowhere}\n", file: config)
        #expect(missing.contains("\(config):2") && missing.contains("auth.file: cannot read \(home)/nowhere"), "\(missing)")
        try "# accounts\nalice:\(Self.hash)\nbob:$1$Suxu57gt$YmiRLLlGqOiZQ3rSO0zzg1\n".write(toFile: home + "/users", atomically: true, encoding: .utf8)
        let bad = problems("methods: [username]\nauth: {file: users}\n", file: config)
        #expect(bad.contains("auth.file: \(home)/users:3: user 'bob'"), "\(bad)")
        let noFile = problems("listen: [{address: 127.0.0.1:1080, methods: [username], auth: file}]\n", file: config)
        #expect(noFile.contains("listen[0]") && noFile.contains("set auth.file"), "\(noFile)")
        // A device is never read whole: /dev/zero would never end.
        let device = problems("methods: [username]\nauth: {file: /dev/zero}\nrules: [{action: deny, to_file: /dev/zero}]\n", file: config)
        #expect(device.contains("auth.file: /dev/zero is not a regular file") && device.contains("to_file: /dev/zero is not a regular file"), "\(device)")
        let unknown = problems("listen: [{address: 127.0.0.1:1080, auth: ldap}]\n", file: config)
        #expect(unknown.contains("'ldap' is not pam or file"), "\(unknown)")
    }
}
