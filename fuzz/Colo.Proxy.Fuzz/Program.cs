using System.Diagnostics;
using SharpFuzz;

namespace Colo.Proxy.Fuzz;

/// <summary>
/// Entry point. No arguments: the SharpFuzz/AFL++ persistent-mode target (input on stdin, see scripts/fuzz.sh).
/// <c>--write-corpus DIR</c>: writes the seed corpus. <c>--replay PATH...</c>: runs files (or every file of
/// directories) in-process and prints each crash with its stack trace; exit code 1 when any input crashes.
/// <c>--dump FILE</c>: prints an input's records decoded (for triage).
/// </summary>
internal static class Program
{
    private static readonly byte[] Input = new byte[(1 << 20) + 1];

    public static int Main(string[] args)
    {
        if (args.Length >= 2 && args[0] == "--write-corpus")
        {
            return WriteCorpus(args[1]);
        }
        if (args.Length >= 2 && args[0] == "--replay")
        {
            return Replay(args.Skip(1));
        }
        if (args.Length >= 2 && args[0] == "--dump")
        {
            Dump.Print(File.ReadAllBytes(args[1]), Console.Out);
            return 0;
        }
        if (args.Length != 0)
        {
            Console.Error.WriteLine("usage: Colo.Proxy.Fuzz                       (under afl-fuzz; input on stdin)");
            Console.Error.WriteLine("       Colo.Proxy.Fuzz --write-corpus DIR");
            Console.Error.WriteLine("       Colo.Proxy.Fuzz --replay FILE|DIR...");
            Console.Error.WriteLine("       Colo.Proxy.Fuzz --dump FILE            (the records of an input, decoded)");
            return 2;
        }
        Fuzzer.Run(stream =>
        {
            int n = 0, r;
            while (n < Input.Length && (r = stream.Read(Input, n, Input.Length - n)) > 0)
            {
                n += r;
            }
            Harness.Run(Input, n);
        });
        return 0;
    }

    private static int WriteCorpus(string dir)
    {
        Directory.CreateDirectory(dir);
        int count = 0;
        foreach ((string name, byte[] data) in Seeds.All())
        {
            // Every seed must itself pass, or afl-fuzz refuses to start.
            Array.Copy(data, Input, data.Length);
            Harness.Run(Input, data.Length);
            File.WriteAllBytes(Path.Combine(dir, name + ".bin"), data);
            count++;
        }
        Console.WriteLine($"wrote {count} seeds to {dir}");
        return 0;
    }

    private static int Replay(IEnumerable<string> paths)
    {
        var files = new List<string>();
        foreach (string p in paths)
        {
            if (Directory.Exists(p))
            {
                files.AddRange(Directory.GetFiles(p).Where(f => !Path.GetFileName(f).StartsWith("README", StringComparison.Ordinal)).Order(StringComparer.Ordinal));
            }
            else
            {
                files.Add(p);
            }
        }
        int crashes = 0;
        var sw = Stopwatch.StartNew();
        foreach (string f in files)
        {
            byte[] data = File.ReadAllBytes(f);
            int n = Math.Min(data.Length, Input.Length);
            Array.Copy(data, Input, n);
            try
            {
                Harness.Run(Input, n);
                Console.WriteLine($"ok    {f} ({n} bytes, {Harness.LastRecords} records, {Harness.LastPvmFrames} PVM / {Harness.LastSvmFrames} SVM frames, " +
                    $"{Harness.LastMatched} matched, {Harness.LastBadFrames} bad, {Harness.LastRewritten} rewritten, {Harness.LastCheckpointRequests} checkpoint requests)");
            }
            catch (Exception e)
            {
                crashes++;
                Console.WriteLine($"CRASH {f} ({n} bytes): {(e is InvariantViolationException ? "invariant violated" : "exception escaped the proxy")}");
                Console.WriteLine(e);
            }
        }
        Console.WriteLine($"{files.Count} inputs, {crashes} crashes, {sw.Elapsed.TotalSeconds:F1} s");
        return crashes == 0 ? 0 : 1;
    }
}
