/// Which part of a verified client certificate names its user.
public enum CertificateIdentityField: String, Sendable, Hashable, CaseIterable {
    /// The subject's common name (CN).
    case cn
    /// The subject alternative name of type e-mail (rfc822Name).
    case email
    /// The subject alternative name of type URI.
    case uri
}

/// What a client certificate says about who holds it: read from the certificate's DER encoding
/// by `DERReader`, nothing trusted that the TLS handshake has not verified.
public struct CertificateFacts: Sendable, Hashable {
    /// The serial number, leading zero bytes dropped.
    public var serial: [UInt8]
    /// The issuer's distinguished name, as encoded (compared byte for byte with a CRL's issuer).
    public var issuer: [UInt8]
    /// The subject's distinguished name, as encoded.
    public var subject: [UInt8]
    /// Every common name in the subject, in order.
    public var commonNames: [String]
    /// Every e-mail subject alternative name.
    public var emails: [String]
    /// Every URI subject alternative name.
    public var uris: [String]

    /// Why a certificate names no user.
    public enum Refusal: Error, Sendable, Hashable, CustomStringConvertible {
        case malformed
        /// On the client CA's revocation list.
        case revoked
        case missing(CertificateIdentityField)
        case ambiguous(CertificateIdentityField)
        /// Not printable text a log, a rule and a metric label can carry.
        case unusable(CertificateIdentityField)

        public var description: String {
            switch self {
            case .malformed: return "the certificate could not be read"
            case .revoked: return "the certificate is revoked (tls.crl)"
            case .missing(let field): return "the certificate has no \(field.rawValue)"
            case .ambiguous(let field): return "the certificate has more than one \(field.rawValue)"
            case .unusable(let field): return "the certificate's \(field.rawValue) is empty, too long or holds control characters"
            }
        }
    }

    /// Reads a certificate (RFC 5280 section 4.1) from its DER encoding.
    public init(der: [UInt8]) throws(Refusal) {
        do {
            var outer = DERReader(der[...])
            var certificate = try outer.read(DERReader.sequence).children
            var tbs = try certificate.read(DERReader.sequence).children
            _ = try tbs.readIf(0xA0)  // [0] EXPLICIT version
            serial = DERReader.serial(try tbs.read(DERReader.integer).content)
            _ = try tbs.read(DERReader.sequence)  // signature algorithm
            issuer = Array(try tbs.read(DERReader.sequence).encoding)
            _ = try tbs.read(DERReader.sequence)  // validity
            let subjectName = try tbs.read(DERReader.sequence)
            subject = Array(subjectName.encoding)
            _ = try tbs.read(DERReader.sequence)  // subject public key info
            _ = try tbs.readIf(0x81)  // [1] IMPLICIT issuerUniqueID
            _ = try tbs.readIf(0x82)  // [2] IMPLICIT subjectUniqueID
            commonNames = try Self.commonNames(subjectName.children)
            (emails, uris) = ([], [])
            if let extensions = try tbs.readIf(0xA3) {
                try readAlternativeNames(extensions.children)
            }
        } catch {
            throw .malformed
        }
    }

    /// The user name `field` gives: exactly one value, 1 to 255 bytes of text without control
    /// characters.
    public func user(from field: CertificateIdentityField) throws(Refusal) -> String {
        let values: [String]
        switch field {
        case .cn: values = commonNames
        case .email: values = emails
        case .uri: values = uris
        }
        guard let value = values.first else { throw .missing(field) }
        guard values.count == 1 else { throw .ambiguous(field) }
        let bytes = value.utf8
        guard (1...255).contains(bytes.count),
            !value.unicodeScalars.contains(where: { $0.value < 0x20 || (0x7F...0x9F).contains($0.value) })
        else { throw .unusable(field) }
        return value
    }

    private static let commonNameOID: [UInt8] = [0x55, 0x04, 0x03]  // 2.5.4.3
    private static let alternativeNameOID: [UInt8] = [0x55, 0x1D, 0x11]  // 2.5.29.17

    /// Name ::= SEQUENCE OF SET OF AttributeTypeAndValue.
    private static func commonNames(_ name: DERReader) throws(DERReader.Malformed) -> [String] {
        var name = name
        var found: [String] = []
        while !name.isAtEnd {
            var set = try name.read(DERReader.set).children
            while !set.isAtEnd {
                var attribute = try set.read(DERReader.sequence).children
                let type = try attribute.read(DERReader.objectIdentifier)
                let value = try attribute.read()
                guard type.content.elementsEqual(commonNameOID) else { continue }
                found.append(try text(value))
            }
        }
        return found
    }

    /// Extensions ::= SEQUENCE OF Extension; only subjectAltName is read.
    private mutating func readAlternativeNames(_ wrapper: DERReader) throws(DERReader.Malformed) {
        var wrapper = wrapper
        var extensions = try wrapper.read(DERReader.sequence).children
        while !extensions.isAtEnd {
            var item = try extensions.read(DERReader.sequence).children
            let oid = try item.read(DERReader.objectIdentifier)
            _ = try item.readIf(DERReader.boolean)
            let value = try item.read(DERReader.octetString)
            guard oid.content.elementsEqual(Self.alternativeNameOID) else { continue }
            var inner = DERReader(value.content)
            var names = try inner.read(DERReader.sequence).children
            while !names.isAtEnd {
                let name = try names.read()
                // rfc822Name [1] and uniformResourceIdentifier [6], both IA5String, implicit.
                switch name.tag {
                case 0x81: emails.append(try Self.ascii(name.content))
                case 0x86: uris.append(try Self.ascii(name.content))
                default: continue
                }
            }
        }
    }

    /// A directory string: UTF8String, PrintableString or IA5String; others are not read.
    private static func text(_ element: DERReader.Element) throws(DERReader.Malformed) -> String {
        switch element.tag {
        case 0x0C:
            guard let text = String(validating: element.content, as: UTF8.self) else { throw DERReader.Malformed() }
            return text
        case 0x13, 0x16: return try ascii(element.content)
        default: throw DERReader.Malformed()
        }
    }

    private static func ascii(_ bytes: ArraySlice<UInt8>) throws(DERReader.Malformed) -> String {
        guard bytes.allSatisfy({ $0 < 0x80 }) else { throw DERReader.Malformed() }
        return String(decoding: bytes, as: UTF8.self)
    }
}
