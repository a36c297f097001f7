using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Colo.Disk.Bench;

/// <summary>Image files: filling, comparing, evicting from the page cache.</summary>
internal static partial class Images
{
    private const int Mib = 1 << 20;
    private const int PosixFadvDontNeed = 4;

    /// <summary>Writes <paramref name="size"/> bytes of pseudo-random data (no all-zero MiB) and fsyncs the file.</summary>
    public static void FillFull(string path, long size, int seed)
    {
        using SafeFileHandle h = File.OpenHandle(path, FileMode.Create, FileAccess.Write);
        byte[] chunk = new byte[Mib];
        var rng = new Random(seed);
        for (long off = 0; off < size; off += Mib)
        {
            rng.NextBytes(chunk);
            RandomAccess.Write(h, chunk.AsSpan(0, (int)Math.Min(Mib, size - off)), off);
        }

        RandomAccess.FlushToDisk(h);
    }

    /// <summary>
    /// A sparse file of <paramref name="size"/> bytes with <paramref name="percent"/> % of its MiB chunks filled with
    /// pseudo-random data, spread evenly; the rest are holes. Fsynced.
    /// </summary>
    /// <returns>Bytes of data written.</returns>
    public static long FillSparse(string path, long size, int percent, int seed)
    {
        using SafeFileHandle h = File.OpenHandle(path, FileMode.Create, FileAccess.Write);
        RandomAccess.SetLength(h, size);
        byte[] chunk = new byte[Mib];
        var rng = new Random(seed);
        long written = 0;
        long chunks = (size + Mib - 1) / Mib;
        for (long i = 0; i < chunks; i++)
        {
            if (i * percent / 100 == (i + 1) * percent / 100)
            {
                continue;
            }

            long off = i * Mib;
            int len = (int)Math.Min(Mib, size - off);
            rng.NextBytes(chunk);
            RandomAccess.Write(h, chunk.AsSpan(0, len), off);
            written += len;
        }

        RandomAccess.FlushToDisk(h);
        return written;
    }

    /// <summary>True when both files have the same length and bytes.</summary>
    public static bool Equal(string a, string b)
    {
        using SafeFileHandle ha = File.OpenHandle(a, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        using SafeFileHandle hb = File.OpenHandle(b, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        long len = RandomAccess.GetLength(ha);
        if (len != RandomAccess.GetLength(hb))
        {
            return false;
        }

        byte[] ba = new byte[4 * Mib];
        byte[] bb = new byte[4 * Mib];
        for (long off = 0; off < len; off += ba.Length)
        {
            int n = (int)Math.Min(ba.Length, len - off);
            ReadFully(ha, ba.AsSpan(0, n), off);
            ReadFully(hb, bb.AsSpan(0, n), off);
            if (!ba.AsSpan(0, n).SequenceEqual(bb.AsSpan(0, n)))
            {
                return false;
            }
        }

        return true;
    }

    private static void ReadFully(SafeFileHandle h, Span<byte> buffer, long offset)
    {
        while (!buffer.IsEmpty)
        {
            int n = RandomAccess.Read(h, buffer, offset);
            if (n <= 0)
            {
                throw new IOException("file shorter than its length");
            }

            buffer = buffer[n..];
            offset += n;
        }
    }

    /// <summary>Fsyncs the file and drops its pages from the page cache (posix_fadvise DONTNEED): only this file, not the machine's cache.</summary>
    /// <returns>True when the kernel accepted the advice.</returns>
    public static bool Evict(string path)
    {
        using SafeFileHandle h = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite);
        RandomAccess.FlushToDisk(h);
        return posix_fadvise(h, 0, 0, PosixFadvDontNeed) == 0;
    }

    [LibraryImport("libc")]
    private static partial int posix_fadvise(SafeFileHandle fd, long offset, long len, int advice);
}

/// <summary>Host facts printed at the top and bottom of the output.</summary>
internal static class HostInfo
{
    public static string LoadAverage()
    {
        try
        {
            string[] f = File.ReadAllText("/proc/loadavg").Split(' ');
            return $"{f[0]} {f[1]} {f[2]} (1/5/15 min)";
        }
        catch (IOException)
        {
            return "unknown";
        }
    }

    public static string CpuModel()
    {
        try
        {
            foreach (string line in File.ReadLines("/proc/cpuinfo"))
            {
                if (line.StartsWith("model name", StringComparison.Ordinal))
                {
                    return line[(line.IndexOf(':', StringComparison.Ordinal) + 1)..].Trim();
                }
            }
        }
        catch (IOException)
        {
        }

        return "unknown cpu";
    }

    public static string MemTotal()
    {
        try
        {
            foreach (string line in File.ReadLines("/proc/meminfo"))
            {
                if (line.StartsWith("MemTotal:", StringComparison.Ordinal))
                {
                    long kb = long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture);
                    return $"{kb / 1024 / 1024.0:F1} GiB RAM";
                }
            }
        }
        catch (IOException)
        {
        }

        return "unknown RAM";
    }

    /// <summary>File system type and device of the mount holding <paramref name="dir"/> (longest mount-point prefix in /proc/mounts).</summary>
    public static (string Type, string Device) FileSystem(string dir)
    {
        string full = Path.GetFullPath(dir).TrimEnd('/') + "/";
        (string Type, string Device) best = ("unknown", "unknown");
        int bestLen = -1;
        try
        {
            foreach (string line in File.ReadLines("/proc/mounts"))
            {
                string[] f = line.Split(' ');
                if (f.Length < 3)
                {
                    continue;
                }

                string mount = f[1].TrimEnd('/') + "/";
                if (full.StartsWith(mount, StringComparison.Ordinal) && mount.Length >= bestLen)
                {
                    best = (f[2], f[0]);
                    bestLen = mount.Length;
                }
            }
        }
        catch (IOException)
        {
        }

        return best;
    }

    public static string ToolVersion(string tool, string arg)
    {
        try
        {
            using Process p = Process.Start(new ProcessStartInfo(tool, arg) { RedirectStandardOutput = true, UseShellExecute = false })!;
            string first = p.StandardOutput.ReadLine() ?? "";
            p.StandardOutput.ReadToEnd();
            p.WaitForExit();
            return first;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return tool + " not found";
        }
    }
}

/// <summary>Medians of repeated measurements, keyed by name.</summary>
internal sealed class Samples
{
    private readonly Dictionary<string, List<double>> _values = [];

    public void Add(string key, double value)
    {
        if (!_values.TryGetValue(key, out List<double>? list))
        {
            _values[key] = list = [];
        }

        list.Add(value);
    }

    public double Median(string key)
    {
        if (!_values.TryGetValue(key, out List<double>? values) || values.Count == 0)
        {
            return double.NaN;
        }

        var sorted = values.Order().ToList();
        int n = sorted.Count;
        return n % 2 == 1 ? sorted[n / 2] : (sorted[(n / 2) - 1] + sorted[n / 2]) / 2;
    }

    public string Range(string key, string format)
    {
        if (!_values.TryGetValue(key, out List<double>? values) || values.Count == 0)
        {
            return "-";
        }

        return $"{values.Min().ToString(format, CultureInfo.InvariantCulture)}–{values.Max().ToString(format, CultureInfo.InvariantCulture)}";
    }
}
