import SallyportTestSupport
import Foundation
import SallyportFuzz
import Testing

/// The fuzz targets over their committed seed corpus and every crash found so far (each crash a
/// file under Tests/Fuzz/Crashes/TARGET-…): a fixed crash stays fixed.
@Suite(.timeLimit(.minutes(1))) struct FuzzCorpusTests {
    static func inputs(under folder: String) -> [(target: String, path: String)] {
        let root = packageRoot() + "/Tests/Fuzz/" + folder
        let files = FileManager.default.enumerator(atPath: root)?.compactMap { $0 as? String } ?? []
        return files.sorted().compactMap { relative in
            let path = root + "/" + relative
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue,
                !relative.hasPrefix(".") && !relative.contains("/.")
            else { return nil }
            // Corpus/TARGET/name, or Crashes/TARGET-name.
            let target = folder == "Corpus"
                ? String(relative.split(separator: "/")[0])
                : FuzzTargets.all.keys.sorted { $0.count > $1.count }.first { relative.hasPrefix($0 + "-") } ?? relative
            return (target, path)
        }
    }

    @Test func everySeedOfEveryTargetRuns() throws {
        let seeds = Self.inputs(under: "Corpus")
        #expect(Set(seeds.map(\.target)) == Set(FuzzTargets.all.keys), "each target has a seed corpus")
        for (target, path) in seeds {
            let run = try #require(FuzzTargets.all[target], "no target \(target) for \(path)")
            run(Array(try Data(contentsOf: URL(fileURLWithPath: path))))
        }
    }

    @Test func everyCrashFoundStaysFixed() throws {
        for (target, path) in Self.inputs(under: "Crashes") {
            let run = try #require(FuzzTargets.all[target], "crash file \(path) names no target")
            run(Array(try Data(contentsOf: URL(fileURLWithPath: path))))
        }
    }
}
