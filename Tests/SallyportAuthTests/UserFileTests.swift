import NIOCore
import NIOPosix
import SOCKSProtocol
import Testing

@testable import SallyportAuth

/// Reading and rewriting the user file: lines, comments, groups, bad lines.
@Suite(.timeLimit(.minutes(1))) struct UserFileTests {
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
