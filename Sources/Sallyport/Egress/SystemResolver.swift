import SOCKSProtocol

#if canImport(Glibc)
import Glibc
#endif

/// The system resolver: `getaddrinfo` for both families, as /etc/nsswitch.conf, /etc/hosts and
/// resolv.conf say. Blocks; call it from the resolver's threads only.
public enum SystemResolver {
    /// Makes the process look names up as given: resolv.conf's `search` and `domain` lists are not
    /// applied (an empty `LOCALDOMAIN` overrides them), so `db` never becomes `db.corp.example` behind
    /// the back of a rule that refuses `.corp.example`. Call it at start, before any lookup and before
    /// other threads run: it sets an environment variable.
    public static func lookUpNamesAsGiven() {
        setenv("LOCALDOMAIN", "", 1)
    }

    static let lookup: NameResolver.Lookup = { name in
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_protocol = Int32(IPPROTO_TCP)
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(name, nil, &hints, &list)
        guard status == 0, let first = list else {
            return .failure(.init(reason: String(cString: gai_strerror(status))))
        }
        defer { freeaddrinfo(list) }
        var result: [IPAddress] = []
        var current: UnsafeMutablePointer<addrinfo>? = first
        while let entry = current {
            current = entry.pointee.ai_next
            guard let raw = entry.pointee.ai_addr, let address = IPAddress(UnsafePointer(raw)) else { continue }
            if !result.contains(address) { result.append(address) }
        }
        guard !result.isEmpty else { return .failure(.init(reason: "no IPv4 or IPv6 address")) }
        return .success(result)
    }
}
