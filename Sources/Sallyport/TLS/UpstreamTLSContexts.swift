import NIOCore
import NIOSSL
import SOCKSProtocol
import SallyportPolicy

/// The TLS client contexts of the `socks5+tls` upstreams the rules name, made from their files at
/// start and at each reload (one per distinct set of files and names).
struct UpstreamTLSContexts: Sendable {
    private var contexts: [UpstreamTLS: NIOSSLContext] = [:]

    init() {}

    /// Reads the files of every `socks5+tls` via of `policy`.
    static func load(_ policy: Policy) throws(ServerTLS.LoadError) -> UpstreamTLSContexts {
        var result = UpstreamTLSContexts()
        let routes = policy.rules.compactMap(\.route) + [policy.defaultRoute].compactMap { $0 }
        for upstream in routes.compactMap(\.via) {
            guard let tls = upstream.tls, result.contexts[tls] == nil else { continue }
            result.contexts[tls] = try context(tls, for: upstream)
        }
        return result
    }

    private static func context(_ tls: UpstreamTLS, for upstream: UpstreamProxy) throws(ServerTLS.LoadError) -> NIOSSLContext {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        configuration.shutdownTimeout = .seconds(1)
        do {
            if let ca = tls.ca {
                configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(ca))
            }
            if let certificate = tls.certificate, let key = tls.key {
                configuration.certificateChain = try NIOSSLCertificate.fromPEMFile(certificate).map { .certificate($0) }
                configuration.privateKey = .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))
            }
            return try NIOSSLContext(configuration: configuration)
        } catch {
            let files = [tls.ca, tls.certificate, tls.key].compactMap { $0 }.joined(separator: ", ")
            throw ServerTLS.LoadError(
                description: "via \(upstream): the TLS files (\(files)) cannot be used (\(error)); tls_ca and tls_certificate are PEM certificates, tls_key an unencrypted PEM key, each readable by sallyport")
        }
    }

    /// The handlers that start TLS to `upstream`, checking its certificate for `tls_server_name`
    /// (else the URL's host); none for an upstream without TLS.
    func handlers(for upstream: UpstreamProxy) throws -> [any ChannelHandler] {
        guard let tls = upstream.tls else { return [] }
        guard let context = contexts[tls] else { throw ConnectFailure(code: .generalFailure, reason: "\(upstream): no TLS context", configuration: true) }
        let name = tls.serverName ?? upstream.host
        // An IP address is no SNI name: the certificate is then checked for that address.
        return [try NIOSSLClientHandler(context: context, serverHostname: IPAddress(name) != nil ? nil : name), TLSEndOfStream()]
    }
}
