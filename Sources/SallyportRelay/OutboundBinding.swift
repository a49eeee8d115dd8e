import NIOCore
import SOCKSProtocol

#if canImport(Glibc)
import Glibc
#endif

/// Where an outbound socket (a CONNECT's target connection, a UDP destination socket) leaves this
/// host from: a source address, an interface, or both. Applied before the socket connects.
public struct OutboundBinding: Hashable, Sendable {
    /// The source address (its port is left to the kernel at connect time).
    public var address: IPAddress?
    /// The interface (SO_BINDTODEVICE, which needs CAP_NET_RAW).
    public var interface: String?

    public init(address: IPAddress? = nil, interface: String? = nil) {
        self.address = address
        self.interface = interface
    }

    /// Whether a destination can be reached from the source address: the same family.
    public func reaches(_ destination: SocketAddress) -> Bool {
        guard let address else { return true }
        switch (address, destination.protocol) {
        case (.v4, .inet), (.v6, .inet6): return true
        default: return false
        }
    }

    /// Sets the interface, then binds the source address with `IP_BIND_ADDRESS_NO_PORT` (the port
    /// is chosen at connect, per destination, so that one source address serves as many
    /// connections as it has destinations, not only as many ports as it has). Call before connect,
    /// on the channel's event loop.
    public func apply(to channel: any Channel) -> EventLoopFuture<Void> {
        let ready = bindInterface(channel)
        guard let address else { return ready }
        return ready.flatMapThrowing {
            try channel.syncOptions?.setOption(
                ChannelOptions.Types.SocketOption(level: .ip, name: .init(rawValue: Self.bindAddressNoPort)), value: 1)
        }.flatMap {
            channel.bind(to: address.socketAddress(port: 0))
        }.flatMapErrorThrowing { error in
            if error is OutboundBindingError { throw error }
            throw OutboundBindingError(reason: "cannot use source address \(address.socketAddress(port: 0).ipAddress ?? "?"): \(error)")
        }
    }

    /// The source address as a socket address with port 0 (the kernel picks the port).
    public var sourceAddress: SocketAddress? { address?.socketAddress(port: 0) }

    /// Binds the socket to the interface, if one is named (before bind and connect).
    public func bindInterface(_ channel: any Channel) -> EventLoopFuture<Void> {
        var ready = channel.eventLoop.makeSucceededVoidFuture()
        if let interface {
            guard let provider = channel as? any SocketOptionProvider else {
                return channel.eventLoop.makeFailedFuture(ChannelError.operationUnsupported)
            }
            var name = InterfaceName()
            let bytes = Array(interface.utf8.prefix(15))
            withUnsafeMutableBytes(of: &name.bytes) { buffer in buffer.copyBytes(from: bytes) }
            ready = provider.unsafeSetSocketOption(level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(SO_BINDTODEVICE), value: name)
                .flatMapErrorThrowing { error in
                    if let error = error as? IOError, error.errnoCode == EPERM {
                        throw OutboundBindingError(reason: "binding to interface \(interface) needs CAP_NET_RAW (AmbientCapabilities=CAP_NET_RAW)")
                    }
                    throw OutboundBindingError(reason: "cannot bind to interface \(interface): \(error)")
                }
        }
        return ready
    }

    /// `IP_BIND_ADDRESS_NO_PORT` (Linux 4.2), which Glibc's headers do not always name.
    static let bindAddressNoPort: CInt = 24
}

/// An outbound socket that could not be bound as its rule says.
public struct OutboundBindingError: Error, CustomStringConvertible {
    public var reason: String
    public var description: String { reason }
}

/// `IFNAMSIZ` bytes, NUL-terminated, as SO_BINDTODEVICE takes an interface name.
struct InterfaceName: Sendable {
    var bytes: (UInt64, UInt64) = (0, 0)
}
