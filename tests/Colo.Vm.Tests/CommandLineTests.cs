namespace Colo.Vm.Tests;

public sealed class CommandLineTests
{
    internal static VmSpec Sample(string tag = "pvm") => new()
    {
        Name = tag,
        KernelPath = "/img/vmlinuz",
        InitrdPath = "/img/initrd.gz",
        KernelCmdline = "console=ttyS0 quiet",
        MemoryMiB = 256,
        RamFilePath = $"/dev/shm/{tag}.ram",
        NetSocketPath = $"/run/colo/{tag}-net.sock",
        MacAddress = "52:54:00:12:34:56",
        QmpSocketPath = $"/run/colo/{tag}-qmp.sock",
        ConsoleLogPath = $"/var/log/colo/{tag}.log",
        Accelerator = Accelerator.Tcg,
    };

    [Fact]
    public void Build_FullSpec_ExactArgv()
    {
        string[] expected =
        [
            "-accel", "tcg",
            "-machine", "q35,memory-backend=mem",
            "-cpu", "qemu64",
            "-object", "memory-backend-file,id=mem,size=256M,mem-path=/dev/shm/pvm.ram,share=on",
            "-m", "256M",
            "-smp", "1",
            "-nodefaults",
            "-no-user-config",
            "-display", "none",
            "-vga", "none",
            "-serial", "file:/var/log/colo/pvm.log",
            "-kernel", "/img/vmlinuz",
            "-initrd", "/img/initrd.gz",
            "-append", "console=ttyS0 quiet",
            "-netdev", "stream,id=n0,server=off,addr.type=unix,addr.path=/run/colo/pvm-net.sock",
            "-device", "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56,romfile=,guest_announce=off",
            "-qmp", "unix:/run/colo/pvm-qmp.sock,server=on,wait=off",
        ];
        Assert.Equal(expected, QemuCommandLine.Build(Sample()));
    }

    [Fact]
    public void Build_IncomingDeferAndKvmAndExtraArgs()
    {
        VmSpec s = Sample() with { IncomingDefer = true, Accelerator = Accelerator.Kvm, ExtraArgs = ["-device", "virtio-blk-pci,drive=d0"] };
        IReadOnlyList<string> a = QemuCommandLine.Build(s);
        Assert.Equal(["-accel", "kvm"], a.Take(2));
        Assert.Equal(["-device", "virtio-blk-pci,drive=d0", "-incoming", "defer"], a.TakeLast(4));
    }

    [Fact]
    public void Build_NoKernel_OmitsKernelInitrdAppend()
    {
        VmSpec s = Sample() with { KernelPath = null, InitrdPath = null, KernelCmdline = null };
        IReadOnlyList<string> a = QemuCommandLine.Build(s);
        Assert.DoesNotContain("-kernel", a);
        Assert.DoesNotContain("-initrd", a);
        Assert.DoesNotContain("-append", a);
    }

    [Fact]
    public void Build_PrimaryAndStandby_DifferOnlyInPathsAndIncoming()
    {
        VmSpec pvm = Sample("pvm");
        VmSpec svm = Sample("svm") with { IncomingDefer = true };
        IReadOnlyList<string> a = QemuCommandLine.Build(pvm);
        IReadOnlyList<string> b = QemuCommandLine.Build(svm);
        Assert.Equal(["-incoming", "defer"], b.TakeLast(2));
        string[] na = a.Select(x => x.Replace("pvm", "X", StringComparison.Ordinal)).ToArray();
        string[] nb = b.SkipLast(2).Select(x => x.Replace("svm", "X", StringComparison.Ordinal)).ToArray();
        Assert.Equal(na, nb);
    }

    [Fact]
    public void Build_MacUppercase_Normalised()
    {
        IReadOnlyList<string> a = QemuCommandLine.Build(Sample() with { MacAddress = "52:54:00:AB:CD:EF" });
        Assert.Contains("virtio-net-pci,netdev=n0,mac=52:54:00:ab:cd:ef,romfile=,guest_announce=off", a);
    }

    public static TheoryData<string, Func<VmSpec, VmSpec>> BadSpecs => new()
    {
        { "Name", s => s with { Name = "" } },
        { "Name", s => s with { Name = "a b" } },
        { "MemoryMiB", s => s with { MemoryMiB = 0 } },
        { "RamFilePath", s => s with { RamFilePath = "relative.ram" } },
        { "RamFilePath", s => s with { RamFilePath = "/dev/shm/a,b.ram" } },
        { "NetSocketPath", s => s with { NetSocketPath = "/" + new string('x', 120) } },
        { "QmpSocketPath", s => s with { QmpSocketPath = "" } },
        { "MacAddress", s => s with { MacAddress = "52:54:00:12:34" } },
        { "MacAddress", s => s with { MacAddress = "01:00:5e:00:00:01" } },
        { "InitrdPath", s => s with { KernelPath = null, KernelCmdline = null } },
        { "KernelCmdline", s => s with { KernelPath = null, InitrdPath = null } },
        { "CpuModel", s => s with { CpuModel = "" } },
        { "ExtraArgs", s => s with { ExtraArgs = null! } },
    };

    [Theory]
    [MemberData(nameof(BadSpecs))]
    public void Build_InvalidSpec_ThrowsArgumentExceptionNamingField(string field, Func<VmSpec, VmSpec> mutate)
    {
        ArgumentException e = Assert.Throws<ArgumentException>(() => QemuCommandLine.Build(mutate(Sample())));
        Assert.Equal(field, e.ParamName);
        Assert.Contains(field, e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("flags\t\t: fpu vme de pse vmx sse\n", true, Accelerator.Kvm)]
    [InlineData("flags\t\t: fpu svm\n", true, Accelerator.Kvm)]
    [InlineData("flags\t\t: fpu vmx\n", false, Accelerator.Tcg)]
    [InlineData("flags\t\t: fpu vme hypervisor\n", true, Accelerator.Tcg)]
    [InlineData("model name\t: vmx cpu\nflags\t: fpu\n", true, Accelerator.Tcg)]
    public void AcceleratorProbe_Decide(string cpuinfo, bool kvmOpens, Accelerator expected)
    {
        Assert.Equal(expected, AcceleratorProbe.Decide(cpuinfo, kvmOpens));
    }

    [Fact]
    public void AcceleratorProbe_Detect_IsTcgOnThisMachine_WhenNoVmxOrSvm()
    {
        string flags = File.ReadAllText("/proc/cpuinfo");
        if (!flags.Contains(" vmx", StringComparison.Ordinal) && !flags.Contains(" svm", StringComparison.Ordinal))
        {
            Assert.Equal(Accelerator.Tcg, AcceleratorProbe.Detect());
        }
    }

    [Fact]
    public void Build_NbdDisk_AddsBlockdevAndVirtioBlk()
    {
        var argv = QemuCommandLine.Build(Sample() with { DiskNbdSocketPath = "/run/colo/pvm-disk.sock" });
        int i = argv.ToList().IndexOf("-blockdev");
        Assert.Equal("driver=nbd,node-name=disk0,server.type=unix,server.path=/run/colo/pvm-disk.sock,export=disk", argv[i + 1]);
        Assert.Equal("-device", argv[i + 2]);
        Assert.Equal("virtio-blk-pci,drive=disk0,romfile=", argv[i + 3]);
    }

    [Fact]
    public void Build_FileDiskAndUserNet_ForAnUnprotectedVm()
    {
        var argv = QemuCommandLine.Build(Sample() with
        {
            DiskFilePath = "/var/lib/colo/disk.img",
            UserNetwork = "198.18.0.0/24",
            HostForwards = [(16379, "198.18.0.10", 6379)],
        }).ToList();
        Assert.Contains("driver=raw,node-name=disk0,file.driver=file,file.filename=/var/lib/colo/disk.img", argv);
        Assert.Contains("user,id=n0,restrict=on,net=198.18.0.0/24,hostfwd=tcp:127.0.0.1:16379-198.18.0.10:6379", argv);
        Assert.DoesNotContain(argv, a => a.StartsWith("stream,", StringComparison.Ordinal));
    }

    [Fact]
    public void Validate_RejectsBadDiskAndNetOptions()
    {
        Assert.Throws<ArgumentException>(() => (Sample() with { DiskNbdSocketPath = "/a.sock", DiskFilePath = "/b.img" }).Validate());
        Assert.Throws<ArgumentException>(() => (Sample() with { DiskFilePath = "relative.img" }).Validate());
        Assert.Throws<ArgumentException>(() => (Sample() with { DiskNbdSocketPath = "/a,b.sock" }).Validate());
        Assert.Throws<ArgumentException>(() => (Sample() with { UserNetwork = "not-a-net" }).Validate());
        Assert.Throws<ArgumentException>(() => (Sample() with { HostForwards = [(80, "10.0.0.1", 80)] }).Validate());
        Assert.Throws<ArgumentException>(() => (Sample() with { UserNetwork = "10.0.0.0/24", HostForwards = [(0, "10.0.0.1", 80)] }).Validate());
    }
}
