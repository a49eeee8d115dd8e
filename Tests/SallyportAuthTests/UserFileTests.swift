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

struct PasswordHashTests {
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
}

struct UserFileTests {
    @Test func linesCommentsGroupsAndCRLF() throws {
        let text = """
            # team accounts
            alice:\(Vectors.yescrypt.1):staff,dev

              # indented comment
            bob:\(Vectors.bcrypt.1):
            carol:\(Vectors.sha512.1):ops,ops\r
            dave:!\(Vectors.yescrypt.1)
            """
        let file = try UserFile.parse(text).get()
        #expect(file.accounts.count == 4)
        #expect(file.accounts["alice"]?.groups == ["staff", "dev"])
        #expect(file.accounts["bob"]?.groups == [])
        #expect(file.accounts["carol"]?.groups == ["ops"])
        #expect(file.accounts["carol"]?.hash == Vectors.sha512.1)
        // Two yescrypt hashes of one cost (one locked, which never serves), one bcrypt, one SHA-512.
        #expect(file.decoyHash == Vectors.yescrypt.1)
    }

    @Test func everyBadLineIsReportedWithItsNumber() {
        let text = """
            alice:\(Vectors.yescrypt.1)
            alice:\(Vectors.bcrypt.1)
            old:\(Vectors.md5)
            no-hash
            bad group:\(Vectors.yescrypt.1)
            eve:\(Vectors.yescrypt.1):a b
            many:\(Vectors.yescrypt.1):g:extra
            """
        guard case .failure(let problems) = UserFile.parse(text) else {
            Issue.record("a file with bad lines was taken")
            return
        }
        #expect(problems.lines.map(\.line) == [2, 3, 4, 5, 6, 7])
        #expect(problems.lines.first?.message.contains("already defined") == true)
        #expect(problems.lines[1].message.contains("sallyport passwd"))
    }

    @Test func theDecoyIsOfTheMostCommonMethodAndCost() throws {
        let bcrypt2 = "$2y$05$" + String(Vectors.bcrypt.1.dropFirst(7))
        let file = try UserFile.parse("a:\(Vectors.yescrypt.1)\nb:\(Vectors.bcrypt.1)\nc:\(bcrypt2)\n").get()
        #expect(file.decoyHash == Vectors.bcrypt.1)
        #expect(UserFile.costClass(Vectors.bcrypt.1) == "$2y$05$")
        #expect(UserFile.costClass(Vectors.yescrypt.1) == "$y$j9T$")
        #expect(UserFile.costClass("$6$rounds=5000$salt$hash") == "$6$rounds=5000$")
        #expect(UserFile.costClass(Vectors.sha512.1) == "$6$")
    }

    @Test func settingAndRemovingKeepTheOtherLines() throws {
        let text = "# mine\nalice:\(Vectors.yescrypt.1):staff\n\nbob:\(Vectors.bcrypt.1)\n"
        let updated = UserFile.setting(user: "alice", hash: Vectors.sha512.1, groups: nil, in: text)
        #expect(updated == "# mine\nalice:\(Vectors.sha512.1):staff\n\nbob:\(Vectors.bcrypt.1)\n")
        let regrouped = UserFile.setting(user: "bob", hash: Vectors.bcrypt.1, groups: ["a", "b"], in: updated)
        #expect(regrouped.hasSuffix("bob:\(Vectors.bcrypt.1):a,b\n"))
        let added = UserFile.setting(user: "carol", hash: Vectors.sha256.1, groups: [], in: "")
        #expect(added == "carol:\(Vectors.sha256.1)\n")
        #expect(UserFile.removing(user: "alice", from: text) == "# mine\n\nbob:\(Vectors.bcrypt.1)\n")
        #expect(UserFile.removing(user: "nobody", from: text) == nil)
    }
}

struct FileAuthenticatorTests {
    @Test func rightWrongUnknownAndLockedThroughThePool() async throws {
        let users = try UserFile.parse("alice:\(Vectors.yescrypt.1):staff\nlocked:!\(Vectors.bcrypt.1)\n").get()
        let pool = CheckPool(configuration: .init(threads: 2))
        let authenticator = FileAuthenticator(users: users, pool: pool, failDelay: .milliseconds(200))
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        func check(_ user: String, _ password: String) async throws -> (AuthenticationResult, Double) {
            let start = NIODeadline.now()
            let result = try await authenticator.authenticate(
                AuthenticationRequest(username: user, password: Password(password), client: nil), on: loop
            ).get()
            return (result, Double((NIODeadline.now() - start).nanoseconds) / 1e9)
        }
        let (right, _) = try await check("alice", Vectors.yescrypt.0)
        #expect(right == .success(Identity(user: "alice", groups: ["staff"])))
        for (user, password) in [("alice", "nope"), ("mallory", Vectors.yescrypt.0), ("locked", Vectors.bcrypt.0)] {
            let (result, seconds) = try await check(user, password)
            guard case .failure = result else {
                Issue.record("\(user) was not refused: \(result)")
                continue
            }
            // Answered the fail delay after the check began, whatever the check cost.
            #expect(seconds >= 0.19, "\(user): \(seconds) s")
        }
        #expect(pool.checksStarted == 4)
        await pool.shutdown()
    }
}
