import NIOCore
import NIOPosix
import SOCKSProtocol
import Testing

@testable import SallyportAuth

/// Hashes made by other programs: mkpasswd (yescrypt, SHA-256), htpasswd -B (bcrypt $2y$),
/// openssl passwd -6 (SHA-512), and one MD5 hash, which the file refuses.
enum Vectors {
    static let yescrypt = ("correct horse", "$y$j9T$2Ai6ai5cM6lROYWo09gX01$Fdz1Vb2gdR0WB2aFIitZ68b6V00MCPxf5GjPjkNlYY.")
    static let bcrypt = ("battery staple", "$2y$05$IBXehqq7Wp84Sc0Eu/sSF.2hkiXCgMH.GguHUOjYR3McQEZ1bHV4a")
    static let sha512 = ("tr0ub4dor", "$6$saltsalt$Z08MM/rAz/aol6EOnr76D823.Y1I5Sd6OU9bhHqkxXoMlLP04PPZVyy2VTPy0/nQHMTrAznuA5vMk3lldMGxp1")
    static let sha256 = ("s256pw", "$5$OPCSI09CvLKnOEHH$yzXao.e2VpMZNc.SXO7wO7OFUNSYtqbZa59no.1g8R7")
    static let md5 = "$1$Suxu57gt$YmiRLLlGqOiZQ3rSO0zzg1"
}

/// Checking a password against hashes of every method the user file takes.
@Suite(.timeLimit(.minutes(1))) struct PasswordHashTests {
    @Test(arguments: [Vectors.yescrypt, Vectors.bcrypt, Vectors.sha512, Vectors.sha256])
    func hashesFromOtherToolsVerify(vector: (String, String)) {
        #expect(PasswordHash.problem(with: vector.1) == nil)
        #expect(PasswordHash.verify(Password(vector.0), hash: vector.1))
        #expect(!PasswordHash.verify(Password(vector.0 + "x"), hash: vector.1))
        #expect(!PasswordHash.verify(Password(""), hash: vector.1))
    }

    @Test(arguments: PasswordHash.Method.allCases)
    func madeHashesVerifyAndAreSaltedAfresh(method: PasswordHash.Method) throws {
        let first = try #require(PasswordHash.make(Password("s3cret"), method: method))
        let second = try #require(PasswordHash.make(Password("s3cret"), method: method))
        #expect(first.hasPrefix(method == .yescrypt ? "$y$" : method == .bcrypt ? "$2b$11$" : "$6$rounds=65536$"))
        #expect(first != second)
        #expect(PasswordHash.verify(Password("s3cret"), hash: first))
        #expect(!PasswordHash.verify(Password("s3creT"), hash: first))
    }

    @Test func weakMalformedAndLockedHashes() {
        #expect(PasswordHash.problem(with: Vectors.md5) != nil)
        #expect(PasswordHash.problem(with: "abJnggxhB/yWI") != nil)  // DES
        #expect(PasswordHash.problem(with: "$y$garbage") != nil)
        #expect(PasswordHash.problem(with: "!" + Vectors.yescrypt.1) == nil)
        #expect(!PasswordHash.verify(Password(Vectors.yescrypt.0), hash: "!" + Vectors.yescrypt.1))
        // A NUL byte cannot be part of a crypt(3) passphrase: never a match.
        #expect(!PasswordHash.verify(Password(bytes: Array(Vectors.yescrypt.0.utf8) + [0]), hash: Vectors.yescrypt.1))
    }

    /// A hash whose cost would tie a check thread for minutes per attempt is refused at load.
    @Test(arguments: [
        "$2b$31$IBXehqq7Wp84Sc0Eu/sSF.2hkiXCgMH.GguHUOjYR3McQEZ1bHV4a", "$2y$15$IBXehqq7Wp84Sc0Eu/sSF.2hkiXCgMH.GguHUOjYR3McQEZ1bHV4a",
        "$6$rounds=999999999$saltsalt$Z08MM/rAz/aol6EOnr76D823.Y1I5Sd6OU9bhHqkxXoMlLP04PPZVyy2VTPy0/nQHMTrAznuA5vMk3lldMGxp1",
        "$y$jZT$2Ai6ai5cM6lROYWo09gX01$Fdz1Vb2gdR0WB2aFIitZ68b6V00MCPxf5GjPjkNlYY.",
        "$y$j9z$2Ai6ai5cM6lROYWo09gX01$Fdz1Vb2gdR0WB2aFIitZ68b6V00MCPxf5GjPjkNlYY.",
    ])
    func anUnboundedCostIsRefused(hash: String) {
        let problem = PasswordHash.problem(with: hash)
        #expect(problem?.contains("more than a login may take") == true || problem?.contains("malformed") == true, "\(problem ?? "accepted")")
    }

    @Test func costsUpToTheBoundAreTaken() {
        #expect(PasswordHash.excessiveCost("$2b$14$IBXehqq7Wp84Sc0Eu/sSF.2hkiXCgMH.GguHUOjYR3McQEZ1bHV4a") == nil)
        #expect(PasswordHash.excessiveCost("$6$rounds=1000000$saltsalt$x") == nil)
        #expect(PasswordHash.excessiveCost("$y$jFT$salt$x") == nil)
        #expect(PasswordHash.excessiveCost(Vectors.yescrypt.1) == nil)
    }
}
