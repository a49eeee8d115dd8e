import SallyportFuzz

#if canImport(Glibc)
import Glibc
#endif

#if FUZZING
import CSystemShims

/// Runs libFuzzer over the target named by SALLYPORT_FUZZ_TARGET (see `make fuzz`). SwiftPM gives
/// every executable a main of its own, so libFuzzer's driver is called from it.
@main
struct Fuzz {
    static func main() {
        var argc = CommandLine.argc
        var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
        exit(LLVMFuzzerRunDriver(&argc, &argv) { data, size in fuzzOne(data, size) })
    }
}

/// libFuzzer's entry (its own main, linked in too, refers to it).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let data else { return 0 }
    target(Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}

private let target: @Sendable ([UInt8]) -> Void = {
    let name = getenv("SALLYPORT_FUZZ_TARGET").map { String(cString: $0) } ?? ""
    guard let target = FuzzTargets.all[name] else {
        fatalError("set SALLYPORT_FUZZ_TARGET to one of: \(FuzzTargets.all.keys.sorted().joined(separator: ", "))")
    }
    return target
}()
#else
/// Without libFuzzer: `sallyport-fuzz TARGET FILE...` runs the files through a target once each.
@main
struct Replay {
    static func main() {
        let arguments = CommandLine.arguments.dropFirst()
        guard let name = arguments.first, let target = FuzzTargets.all[name] else {
            print("usage: sallyport-fuzz TARGET FILE...   targets: \(FuzzTargets.all.keys.sorted().joined(separator: ", "))")
            exit(2)
        }
        for path in arguments.dropFirst() {
            guard let file = fopen(path, "rb") else { continue }
            var bytes: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 65_536)
            while true {
                let count = fread(&chunk, 1, chunk.count, file)
                bytes += chunk.prefix(count)
                if count < chunk.count { break }
            }
            fclose(file)
            target(bytes)
        }
    }
}
#endif
