import NIOCore
import SOCKSProtocol
import SallyportPolicy

extension IPAddress {
    /// The IP of a socket address; nil for a Unix socket.
    init?(_ address: SocketAddress) {
        switch address {
        case .v4(let v4):
            self = .v4(SOCKSIPv4Address(UInt32(bigEndian: v4.address.sin_addr.s_addr)))
        case .v6(let v6):
            self = .v6(SOCKSIPv6Address(bytes: withUnsafeBytes(of: v6.address.sin6_addr) { Array($0) }))
        default:
            return nil
        }
    }

    /// A socket address for this IP and `port`.
    func socketAddress(port: Int) throws -> SocketAddress {
        switch self {
        case .v4(let address): return try SocketAddress(packedIPAddress: ByteBuffer(bytes: address.bytes), port: port)
        case .v6(let address): return try SocketAddress(packedIPAddress: ByteBuffer(bytes: address.bytes), port: port)
        }
    }
}
