import NIOCore
import NIOEmbedded
import NIOSSL
import NIOTLS
import SallyportAuth

/// The targets where TLS meets input: the DER reader that names a client certificate's user (and
/// reads CRLs), and the server side of a TLS handshake fed arbitrary bytes.
extension FuzzTargets {
    /// A certificate's facts and a CRL's entries from the same bytes: read the same way twice, and a
    /// user name, when there is one, is 1 to 255 bytes of text without control characters.
    public static func certificate(_ input: [UInt8]) {
        if let facts = try? CertificateFacts(der: input) {
            precondition((try? CertificateFacts(der: input)) == facts, "read differently twice")
            for field in CertificateIdentityField.allCases {
                guard let user = try? facts.user(from: field) else { continue }
                precondition((1...255).contains(user.utf8.count), "user of \(user.utf8.count) bytes")
                precondition(!user.unicodeScalars.contains { $0.value < 0x20 || (0x7F...0x9F).contains($0.value) }, "control in \(user.debugDescription)")
            }
        }
        if let list = try? RevocationList(der: input) {
            precondition((try? RevocationList(der: input)) == list, "read differently twice")
            precondition(!list.revoked.contains { $0.first == 0 }, "a serial kept its leading zero")
        }
    }

    /// The server side of a handshake fed the input in pieces the first byte chooses: no crash, and
    /// nothing reaches the SOCKS side before the handshake is complete.
    public static func tlsHandshake(_ input: [UInt8]) {
        guard let seed = input.first else { return }
        let channel = EmbeddedChannel()
        let watcher = PlaintextWatcher()
        do {
            try channel.pipeline.syncOperations.addHandlers([NIOSSLServerHandler(context: fuzzTLSContext), watcher])
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        } catch {
            return
        }
        for piece in pieces(of: Array(input.dropFirst()), seed: seed) {
            do {
                try channel.writeInbound(ByteBuffer(bytes: piece))
            } catch {
                break
            }
            while (try? channel.readOutbound(as: ByteBuffer.self)) != nil {}
        }
        precondition(!watcher.plaintextBeforeHandshake, "plaintext before the handshake completed")
        // Close, and let TLS's shutdown timer run out: nothing of the connection is left behind.
        _ = try? channel.finish(acceptAlreadyClosed: true)
        channel.embeddedEventLoop.advanceTime(by: .seconds(10))
    }
}

/// Records whether plaintext arrived before the handshake completed.
private final class PlaintextWatcher: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    var handshaken = false
    var plaintextBeforeHandshake = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if !handshaken { plaintextBeforeHandshake = true }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? TLSUserEvent, case .handshakeCompleted = event { handshaken = true }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {}
}

/// A self-signed certificate and key for the handshake target only (CN fuzz.invalid); it protects nothing.
private let fuzzTLSContext: NIOSSLContext = {
    let certificate = """
        -----BEGIN CERTIFICATE-----
        MIIBhjCCASugAwIBAgIUS+Vdh9FfepgvRJsvSRGh/L5w558wCgYIKoZIzj0EAwIw
        FzEVMBMGA1UEAwwMZnV6ei5pbnZhbGlkMCAXDTI2MTIwMzE5MDUzN1oYDzIxMjYx
        MTA5MTkwNTM3WjAXMRUwEwYDVQQDDAxmdXp6LmludmFsaWQwWTATBgcqhkjOPQIB
        BggqhkjOPQMBBwNCAAR8dF8Pgf2mvWX2uJNUlEynVNaDzPbJzncoL6WxFoPVk3l5
        v/w5QnCGJ9q9V0kaZMiW1jzm8mAEM0xceSEeBNmzo1MwUTAdBgNVHQ4EFgQUT4jv
        WyVgEyWQcnNdOzEILb4wb1QwHwYDVR0jBBgwFoAUT4jvWyVgEyWQcnNdOzEILb4w
        b1QwDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNJADBGAiEAw4sLT+seNh4A
        IHYadJ4WUgDu9rH15GjMbmROH+nQivQCIQCwuL0XXV5KrDM9MGUiqJG3xJymdIoe
        CxPozVsAIcouQg==
        -----END CERTIFICATE-----
        """
    let key = """
        -----BEGIN PRIVATE KEY-----
        MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgfW0x1N8dEdapknmv
        4eoyt6Q+Ffp+ZtsVPUqFeT2O+hahRANCAAR8dF8Pgf2mvWX2uJNUlEynVNaDzPbJ
        zncoL6WxFoPVk3l5v/w5QnCGJ9q9V0kaZMiW1jzm8mAEM0xceSEeBNmz
        -----END PRIVATE KEY-----
        """
    var configuration = TLSConfiguration.makeServerConfiguration(
        certificateChain: try! NIOSSLCertificate.fromPEMBytes(Array(certificate.utf8)).map { .certificate($0) },
        privateKey: .privateKey(try! NIOSSLPrivateKey(bytes: Array(key.utf8), format: .pem)))
    configuration.shutdownTimeout = .zero
    return try! NIOSSLContext(configuration: configuration)
}()
