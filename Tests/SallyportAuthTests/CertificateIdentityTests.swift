import SallyportAuth
import Testing

/// The DER reader behind client-certificate logins: which user a certificate names, which serials
/// a CRL revokes, and that broken input is refused without a trap.
@Suite struct CertificateIdentityTests {
    static func der(_ pem: String, label: String = "CERTIFICATE") throws -> [UInt8] {
        try #require(PEM.blocks(pem, label: label)?.first)
    }

    static func facts(_ pem: String) throws -> CertificateFacts {
        try CertificateFacts(der: der(pem))
    }

    static func hex(_ bytes: [UInt8]) -> String {
        bytes.map { String($0, radix: 16, uppercase: true).count == 1 ? "0" + String($0, radix: 16, uppercase: true) : String($0, radix: 16, uppercase: true) }
            .joined()
    }

    @Test func aCertificateNamesItsUserByCommonNameEmailOrURI() throws {
        let alice = try Self.facts(CertificateFixtures.alice)
        #expect(try alice.user(from: .cn) == "alice")
        #expect(try alice.user(from: .email) == "alice@example.test")
        #expect(try alice.user(from: .uri) == "urn:user:alice")
        // The serial as openssl prints it (leading zero bytes dropped on both sides).
        #expect(Self.hex(alice.serial).drop { $0 == "0" } == CertificateFixtures.aliceSerial.drop { $0 == "0" })
        // Issued by the CA: its issuer is the CA's subject, byte for byte.
        #expect(alice.issuer == (try Self.facts(CertificateFixtures.ca)).subject)
    }

    @Test func aFieldThatIsMissingDoubledOrNotPrintableNamesNobody() throws {
        let bob = try Self.facts(CertificateFixtures.bob)
        #expect(throws: CertificateFacts.Refusal.missing(.email)) { try bob.user(from: .email) }
        #expect(throws: CertificateFacts.Refusal.ambiguous(.cn)) { try Self.facts(CertificateFixtures.twocn).user(from: .cn) }
        #expect(throws: CertificateFacts.Refusal.unusable(.cn)) { try Self.facts(CertificateFixtures.crlf).user(from: .cn) }
        #expect(throws: CertificateFacts.Refusal.unusable(.cn)) { try Self.facts(CertificateFixtures.nul).user(from: .cn) }
        // Non-ASCII is a name (the logs escape it).
        #expect(try Self.facts(CertificateFixtures.jose).user(from: .cn) == "Jos\u{E9}")
    }

    @Test func theCRLRevokesBobAndNotAlice() throws {
        let list = try RevocationList(der: Self.der(CertificateFixtures.crl, label: "X509 CRL"))
        #expect(list.revokes(try Self.facts(CertificateFixtures.bob)))
        #expect(!list.revokes(try Self.facts(CertificateFixtures.alice)))
        #expect(list.issuer == (try Self.facts(CertificateFixtures.ca)).subject)
        #expect(list.nextUpdate?.hasSuffix("Z") == true)
        // A serial on the list from another issuer is not revoked by it.
        var stranger = try Self.facts(CertificateFixtures.bob)
        stranger.issuer = [0x30, 0x00]
        #expect(!list.revokes(stranger))
    }

    @Test func everyTruncationAndEveryFlippedByteIsRefusedOrReadWithoutATrap() throws {
        let der = try Self.der(CertificateFixtures.alice)
        for length in 0..<der.count {
            #expect(throws: CertificateFacts.Refusal.malformed) { try CertificateFacts(der: Array(der.prefix(length))) }
        }
        for index in der.indices {
            var flipped = der
            flipped[index] ^= 0xFF
            if let facts = try? CertificateFacts(der: flipped), let user = try? facts.user(from: .cn) {
                #expect(!user.unicodeScalars.contains { $0.value < 0x20 })
            }
        }
        let crl = try Self.der(CertificateFixtures.crl, label: "X509 CRL")
        for length in 0..<crl.count {
            #expect(throws: RevocationList.Malformed.self) { try RevocationList(der: Array(crl.prefix(length))) }
        }
    }

    @Test(arguments: [
        [0x30, 0x80, 0x00, 0x00],  // indefinite length (BER)
        [0x30, 0x85, 0x01, 0x00, 0x00, 0x00, 0x00],  // a 5-byte length
        [0x30, 0x82, 0xFF, 0xFF, 0x00],  // longer than what follows
        [0x1F, 0x81, 0x01, 0x00],  // a high tag number
    ] as [[UInt8]])
    func malformedEncodingsAreRefused(bytes: [UInt8]) {
        #expect(throws: CertificateFacts.Refusal.malformed) { try CertificateFacts(der: bytes) }
    }

    @Test func pemBlocksAreFoundAmongTextAndBadBase64IsRefused() {
        let text = "comment\n-----BEGIN X-----\nAAEC\nAw==\n-----END X-----\ntrailer\n-----BEGIN Y-----\nBA==\n-----END Y-----\n"
        #expect(PEM.blocks(text, label: "X") == [[0, 1, 2, 3]])
        #expect(PEM.blocks(text, label: "Y") == [[4]])
        #expect(PEM.blocks("-----BEGIN X-----\nA*B\n-----END X-----\n", label: "X") == nil)
    }
}
