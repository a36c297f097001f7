namespace Colo.Vm;

/// <summary>QEMU accelerator used to run the guest (<c>-accel</c> option).</summary>
public enum Accelerator
{
    /// <summary>Tiny Code Generator: software emulation, works everywhere, slow.</summary>
    Tcg = 0,

    /// <summary>Linux KVM hardware virtualisation; needs vmx/svm CPU flags and a working <c>/dev/kvm</c>.</summary>
    Kvm = 1,
}

/// <summary>Detects which <see cref="Accelerator"/> this host can use.</summary>
public static class AcceleratorProbe
{
    private static readonly Lazy<Accelerator> s_detected = new(Probe);

    /// <summary>
    /// Returns <see cref="Accelerator.Kvm"/> only when the <c>flags</c> lines of <c>/proc/cpuinfo</c> contain
    /// <c>vmx</c> or <c>svm</c> AND <c>/dev/kvm</c> can be opened for reading and writing; otherwise
    /// <see cref="Accelerator.Tcg"/>. The result is computed once per process and cached. Never throws.
    /// </summary>
    /// <remarks>Some machines expose a <c>/dev/kvm</c> that cannot run guests (nested virtualisation without
    /// vmx/svm); the CPU flag check keeps those on TCG.</remarks>
    public static Accelerator Detect() => s_detected.Value;

    /// <summary>
    /// Testable core of <see cref="Detect"/>: KVM when <paramref name="cpuinfo"/> has a <c>flags</c> line containing
    /// the word <c>vmx</c> or <c>svm</c> and <paramref name="kvmDeviceOpens"/> is true.
    /// </summary>
    /// <param name="cpuinfo">Contents of <c>/proc/cpuinfo</c>.</param>
    /// <param name="kvmDeviceOpens">Whether <c>/dev/kvm</c> could be opened read/write.</param>
    internal static Accelerator Decide(string cpuinfo, bool kvmDeviceOpens)
    {
        if (!kvmDeviceOpens)
        {
            return Accelerator.Tcg;
        }

        foreach (string line in cpuinfo.Split('\n'))
        {
            if (!line.StartsWith("flags", StringComparison.Ordinal))
            {
                continue;
            }

            int colon = line.IndexOf(':');
            if (colon < 0)
            {
                continue;
            }

            foreach (string flag in line[(colon + 1)..].Split(' ', StringSplitOptions.RemoveEmptyEntries))
            {
                if (flag is "vmx" or "svm")
                {
                    return Accelerator.Kvm;
                }
            }
        }

        return Accelerator.Tcg;
    }

    private static Accelerator Probe()
    {
        string cpuinfo;
        try
        {
            cpuinfo = File.ReadAllText("/proc/cpuinfo");
        }
        catch (IOException)
        {
            return Accelerator.Tcg;
        }
        catch (UnauthorizedAccessException)
        {
            return Accelerator.Tcg;
        }

        bool opens;
        try
        {
            using FileStream fs = new("/dev/kvm", FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite, 1, FileOptions.None);
            opens = true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or NotSupportedException)
        {
            opens = false;
        }

        return Decide(cpuinfo, opens);
    }
}
