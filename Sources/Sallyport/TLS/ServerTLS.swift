import Glibc
import NIOCore
import NIOSSL
import SallyportAuth

/// A TLS listener's context, made from its settings' files at start and at each reload: a renewed
/// certificate is served to the connections accepted after the reload, while running sessions keep
/// the one they began with; files that cannot be used fail the reload and the old pair stays.
final class ServerTLS: Sendable {
    let context: NIOSSLContext
    let settings: ListenerTLSSettings
    /// The client CA's revocation lists (empty without `crl`).
    let revocations: [RevocationList]
    /// The server certificate's `notAfter`, Unix seconds.
    let expiry: Int
    /// The groups of each certificate user: the `groups` mapping and the user file together.
    private let userGroups: @Sendable (String) -> [String]

    /// Whether sessions take their user from a client certificate.
    var identifiesClients: Bool { settings.clientCA != nil }

    private init(context: NIOSSLContext, settings: ListenerTLSSettings, revocations: [RevocationList], expiry: Int, userGroups: @escaping @Sendable (String) -> [String]) {
        self.context = context
        self.settings = settings
        self.revocations = revocations
        self.expiry = expiry
        self.userGroups = userGroups
    }

    /// Puts TLS into a new connection's pipeline (first, or after the PROXY header's reader).
    func addHandlers(to pipeline: ChannelPipeline.SynchronousOperations, after reader: (any ChannelHandler)? = nil) throws {
        let handlers: [any ChannelHandler] = [NIOSSLServerHandler(context: context), TLSEndOfStream()]
        if let reader {
            try pipeline.addHandlers(handlers, position: .after(reader))
        } else {
            try pipeline.addHandlers(handlers)
        }
    }

    /// The user a client certificate BoringSSL verified names, with their groups; refused when
    /// the CRL revokes it. Asked once the handshake is done, before any SOCKS byte is read.
    func identity(of certificate: NIOSSLCertificate?) -> Result<Identity, CertificateFacts.Refusal> {
        guard let certificate, let der = try? certificate.toDERBytes() else { return .failure(.malformed) }
        do {
            let facts = try CertificateFacts(der: der)
            if revocations.contains(where: { $0.revokes(facts) }) { return .failure(.revoked) }
            let user = try facts.user(from: settings.identity)
            return .success(Identity(user: user, groups: userGroups(user)))
        } catch {
            return .failure(error)
        }
    }

    /// Why a listener's TLS files cannot be used: the file, what is wrong, and how to fix it.
    struct LoadError: Error, CustomStringConvertible {
        var description: String
    }

    /// Reads the files `settings` names. `warnings` gets what is worth saying but does not stop
    /// the start: a key others can read, a certificate near or past its end, an old CRL.
    static func load(
        _ settings: ListenerTLSSettings, listener: String, users: UserFile?, now: Int = Int(time(nil)), warnings: inout [String]
    ) throws(LoadError) -> ServerTLS {
        let chain = try certificates(settings.certificate, what: "tls.certificate of \(listener)")
        let key: NIOSSLPrivateKey
        do {
            try readable(settings.key, what: "tls.key of \(listener)")
            key = try NIOSSLPrivateKey(file: settings.key, format: .pem)
        } catch let error as LoadError {
            throw error
        } catch {
            throw LoadError(description: "tls.key of \(listener): \(settings.key) is not an unencrypted PEM private key (\(error)); write it with 'openssl pkey -in KEY -out \(settings.key)'")
        }
        var status = stat()
        if stat(settings.key, &status) == 0, status.st_mode & 0o007 != 0 {
            warnings.append("tls.key of \(listener): \(settings.key) can be read by every user of this host; chmod 600 (or 640 with the group sallyport runs as)")
        }
        var configuration = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        configuration.minimumTLSVersion = settings.minimumVersion == "1.3" ? .tlsv13 : .tlsv12
        // How long a closing connection waits for the client's close_notify: a refused client's
        // connection, or an ended session's, is gone within a second.
        configuration.shutdownTimeout = .seconds(1)
        var revocations: [RevocationList] = []
        if let clientCA = settings.clientCA {
            let authorities = try certificates(clientCA, what: "tls.client_ca of \(listener)")
            configuration.certificateVerification = .noHostnameVerification
            configuration.trustRoots = .certificates(authorities)
            configuration.sendCANameList = true
            if let crl = settings.crl {
                revocations = try revocationLists(crl, authorities: authorities, listener: listener, now: now, warnings: &warnings)
            }
        }
        let context: NIOSSLContext
        do {
            context = try NIOSSLContext(configuration: configuration)
        } catch {
            throw LoadError(description: "tls of \(listener): \(settings.certificate) and \(settings.key) do not make a pair (\(error)); the key must be the certificate's own, and the certificate first in its file")
        }
        let expiry = Int(chain[0].notValidAfter)
        let left = expiry - now
        if left <= 0 {
            warnings.append("tls.certificate of \(listener): \(settings.certificate) has expired; clients will refuse it: renew it and reload")
        } else if left < 14 * 86_400 {
            warnings.append("tls.certificate of \(listener): \(settings.certificate) expires in \(left / 86_400) day(s); renew it and reload")
        }
        let mapped = settings.groups
        let accounts = users?.accounts.mapValues(\.groups) ?? [:]
        return ServerTLS(context: context, settings: settings, revocations: revocations, expiry: expiry) { user in
            var groups = mapped[user] ?? []
            for group in accounts[user] ?? [] where !groups.contains(group) { groups.append(group) }
            return groups
        }
    }

    private static func readable(_ path: String, what: String) throws(LoadError) {
        guard access(path, R_OK) == 0 else {
            let reason = String(cString: strerror(errno))
            throw LoadError(description: "\(what): cannot read \(path) (\(reason)); check the path (relative to the configuration file) and that sallyport's user may read it")
        }
    }

    private static func certificates(_ path: String, what: String) throws(LoadError) -> [NIOSSLCertificate] {
        try readable(path, what: what)
        guard let chain = try? NIOSSLCertificate.fromPEMFile(path), !chain.isEmpty else {
            throw LoadError(description: "\(what): \(path) holds no PEM certificate ('-----BEGIN CERTIFICATE-----')")
        }
        return chain
    }

    private static func revocationLists(
        _ path: String, authorities: [NIOSSLCertificate], listener: String, now: Int, warnings: inout [String]
    ) throws(LoadError) -> [RevocationList] {
        let what = "tls.crl of \(listener)"
        try readable(path, what: what)
        guard let bytes = FileBytes.read(path) else { throw LoadError(description: "\(what): cannot read \(path)") }
        let ders = PEM.blocks(String(decoding: bytes, as: UTF8.self), label: "X509 CRL").flatMap { $0.isEmpty ? nil : $0 } ?? [bytes]
        let subjects = Set(authorities.compactMap { try? $0.toDERBytes() }.compactMap { try? CertificateFacts(der: $0).subject })
        var lists: [RevocationList] = []
        for der in ders {
            guard let list = try? RevocationList(der: der) else {
                throw LoadError(description: "\(what): \(path) is not a certificate revocation list (PEM 'X509 CRL' or DER)")
            }
            guard subjects.contains(list.issuer) else {
                throw LoadError(description: "\(what): \(path) was not issued by a CA in tls.client_ca; use the CRL of the CA that issues the client certificates")
            }
            if let next = list.nextUpdate.flatMap(ASN1Time.unixSeconds), next < now {
                warnings.append("\(what): \(path) is past its next update; fetch a new CRL from the CA and reload")
            }
            lists.append(list)
        }
        return lists
    }
}

/// A client that ends the TCP connection without TLS's close_notify (most do, at exit) has closed
/// its side: for SOCKS, whose streams carry their own ends, that is a close, not an error.
final class TLSEndOfStream: ChannelInboundHandler, RemovableChannelHandler, Sendable {
    typealias InboundIn = ByteBuffer

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let error = error as? NIOSSLError, case .uncleanShutdown = error { return }
        context.fireErrorCaught(error)
    }
}

/// A whole file's bytes, or nil.
enum FileBytes {
    static func read(_ path: String, limit: Int = 16 << 20) -> [UInt8]? {
        guard let file = fopen(path, "rb") else { return nil }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while bytes.count <= limit {
            let count = fread(&chunk, 1, chunk.count, file)
            if count == 0 { break }
            bytes += chunk[..<count]
        }
        return bytes.count <= limit ? bytes : nil
    }
}

/// UTCTime (`YYMMDDHHMMSSZ`) and GeneralizedTime (`YYYYMMDDHHMMSSZ`) as Unix seconds.
enum ASN1Time {
    static func unixSeconds(_ text: String) -> Int? {
        var digits = Array(text.utf8)
        guard digits.last == UInt8(ascii: "Z") else { return nil }
        digits.removeLast()
        guard digits.allSatisfy({ (0x30...0x39).contains($0) }) else { return nil }
        let numbers = digits.map { Int($0 - 0x30) }
        func number(_ at: Int, _ count: Int) -> Int { numbers[at..<(at + count)].reduce(0) { $0 * 10 + $1 } }
        var year: Int
        var at: Int
        switch numbers.count {
        case 12:
            year = number(0, 2)
            year += year < 50 ? 2000 : 1900
            at = 2
        case 14:
            year = number(0, 4)
            at = 4
        default: return nil
        }
        var parts = tm()
        parts.tm_year = Int32(year - 1900)
        parts.tm_mon = Int32(number(at, 2) - 1)
        parts.tm_mday = Int32(number(at + 2, 2))
        parts.tm_hour = Int32(number(at + 4, 2))
        parts.tm_min = Int32(number(at + 6, 2))
        parts.tm_sec = Int32(number(at + 8, 2))
        return timegm(&parts)
    }
}

/// What a configuration's TLS files made: each listener's (by index), and the upstreams'.
struct TLSFiles: Sendable {
    var listeners: [ServerTLS?] = []
    var upstreams = UpstreamTLSContexts()
}

extension ServerTLS {
    /// Every listener's TLS (nil for a listener without `tls`), by listener index.
    static func loadAll(_ configuration: ServerConfiguration, warnings: inout [String]) throws(LoadError) -> [ServerTLS?] {
        var result: [ServerTLS?] = []
        for listener in configuration.listeners {
            guard let settings = listener.tls else {
                result.append(nil)
                continue
            }
            result.append(try load(settings, listener: listener.addressDescription, users: configuration.auth.users, warnings: &warnings))
        }
        return result
    }
}
