//! Hardware discovery from the device tree: memory, console, GIC, timer
//! interrupt, PSCI conduit, the initrd (the bundle) and the boot arguments.
//! Nothing about a board is hard-coded.

use rvm_kernel::memory::addr::{PhysAddr, PhysRange};

/// How to reach the firmware's PSCI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conduit {
    Smc,
    Hvc,
}

/// What the device tree says about the machine.
#[derive(Clone, Debug)]
pub struct Platform {
    pub dtb: PhysRange,
    pub memory: heapless::Vec<PhysRange, 4>,
    pub uart: Option<usize>,
    pub gicd: Option<usize>,
    pub gicr: Option<usize>,
    /// The register ranges of the devices above (UART, GIC) and of the
    /// virtio-mmio slots: what the hypervisor maps as Device memory at EL2.
    pub devices: heapless::Vec<PhysRange, 12>,
    /// The virtio-mmio slots (`virtio,mmio` nodes), in device-tree order:
    /// where a control channel's virtio console may be (`crate::control`).
    pub virtio_mmio: heapless::Vec<PhysRange, 32>,
    /// 3 for GICv3; other versions are reported, not driven.
    pub gic_version: u8,
    /// INTID of the EL2 physical (hypervisor) timer.
    pub hyp_timer_intid: u32,
    pub psci: Option<Conduit>,
    pub initrd: Option<PhysRange>,
    pub cpus: u32,
    /// MPIDR affinity of each CPU, in device-tree order.
    pub cpu_ids: heapless::Vec<u64, 8>,
    pub bootargs: heapless::String<256>,
    pub model: heapless::String<64>,
}

/// Why the device tree was not usable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DtbError {
    NotFound,
    Malformed,
}

fn be_cells(bytes: &[u8]) -> impl Iterator<Item = u32> + '_ {
    bytes.chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
}

fn be_number(bytes: &[u8]) -> Option<u64> {
    match bytes.len() {
        4 => Some(u64::from(u32::from_be_bytes(bytes.try_into().ok()?))),
        8 => Some(u64::from_be_bytes(bytes.try_into().ok()?)),
        _ => None,
    }
}

impl Platform {
    /// Parse the flattened device tree at `pa`.
    ///
    /// # Safety
    /// `pa` must point at readable, identity-mapped memory that holds a
    /// device tree (or at least its header) and stays unchanged for the life
    /// of the hypervisor.
    pub unsafe fn discover(pa: usize) -> Result<Self, DtbError> {
        if pa == 0 {
            return Err(DtbError::NotFound);
        }
        // SAFETY: the caller guarantees a readable header; `from_ptr` reads
        // the header's total size and then only that many bytes.
        let fdt = unsafe { fdt::Fdt::from_ptr(pa as *const u8) }.map_err(|_| DtbError::Malformed)?;
        let dtb = PhysRange::new(PhysAddr::new(pa as u64), fdt.total_size() as u64).ok_or(DtbError::Malformed)?;
        let mut p = Platform {
            dtb,
            memory: heapless::Vec::new(),
            uart: None,
            gicd: None,
            gicr: None,
            devices: heapless::Vec::new(),
            virtio_mmio: heapless::Vec::new(),
            gic_version: 0,
            hyp_timer_intid: 26,
            psci: None,
            initrd: None,
            cpus: 0,
            cpu_ids: heapless::Vec::new(),
            bootargs: heapless::String::new(),
            model: heapless::String::new(),
        };
        for r in fdt.memory().regions() {
            if let Some(size) = r.size {
                if let Some(range) = PhysRange::new(PhysAddr::new(r.starting_address as u64), size as u64) {
                    let _ = p.memory.push(range);
                }
            }
        }
        let _ = p.model.push_str(fdt.root().model());
        let chosen = fdt.chosen();
        if let Some(args) = chosen.bootargs() {
            let _ = p.bootargs.push_str(args);
        }
        if let Some(uart) = chosen.stdout().or_else(|| fdt.find_compatible(&["arm,pl011"])) {
            p.uart = uart.reg().and_then(|mut r| r.next()).map(|r| r.starting_address as usize);
            p.add_devices(uart.reg());
        }
        if let Some(gic) = fdt.find_compatible(&["arm,gic-v3"]) {
            p.gic_version = 3;
            if let Some(mut regs) = gic.reg() {
                p.gicd = regs.next().map(|r| r.starting_address as usize);
                p.gicr = regs.next().map(|r| r.starting_address as usize);
            }
            p.add_devices(gic.reg());
        } else if fdt.find_compatible(&["arm,cortex-a15-gic", "arm,gic-400"]).is_some() {
            p.gic_version = 2;
        }
        for node in fdt.all_nodes().filter(|n| n.compatible().is_some_and(|c| c.all().any(|c| c == "virtio,mmio"))) {
            for r in node.reg().into_iter().flatten() {
                if let Some(range) = PhysRange::new(PhysAddr::new(r.starting_address as u64), r.size.unwrap_or(0x200) as u64) {
                    let _ = p.virtio_mmio.push(range);
                }
            }
        }
        // Mapped as one block: the slots sit side by side (0x200 apart on
        // QEMU virt).
        if let (Some(lo), Some(hi)) = (p.virtio_mmio.iter().map(|r| r.start).min(), p.virtio_mmio.iter().map(|r| r.end).max()) {
            let _ = p.devices.push(PhysRange { start: lo, end: hi });
        }
        if let Some(timer) = fdt.find_compatible(&["arm,armv8-timer", "arm,armv7-timer"]) {
            // interrupts = <type num flags> x4: secure, non-secure, virtual, hypervisor.
            if let Some(prop) = timer.property("interrupts") {
                let cells: heapless::Vec<u32, 16> = be_cells(prop.value).take(16).collect();
                if let (Some(kind), Some(num)) = (cells.get(9), cells.get(10)) {
                    // Type 1 = PPI: INTID = 16 + number.
                    p.hyp_timer_intid = if *kind == 1 { 16 + num } else { 32 + num };
                }
            }
        }
        if let Some(psci) = fdt.find_compatible(&["arm,psci-1.0", "arm,psci-0.2", "arm,psci"]) {
            p.psci = match psci.property("method").and_then(|m| m.as_str()) {
                Some("smc") => Some(Conduit::Smc),
                Some("hvc") => Some(Conduit::Hvc),
                _ => None,
            };
        }
        if let Some(chosen_node) = fdt.find_node("/chosen") {
            let start = chosen_node.property("linux,initrd-start").and_then(|v| be_number(v.value));
            let end = chosen_node.property("linux,initrd-end").and_then(|v| be_number(v.value));
            if let (Some(s), Some(e)) = (start, end) {
                if e > s {
                    p.initrd = PhysRange::new(PhysAddr::new(s), e - s);
                }
            }
        }
        p.cpus = fdt.cpus().count() as u32;
        for cpu in fdt.cpus() {
            let _ = p.cpu_ids.push(cpu.ids().first() as u64);
        }
        Ok(p)
    }

    /// Record a device's register ranges (a range without a size counts
    /// as one page).
    fn add_devices(&mut self, regs: Option<impl Iterator<Item = fdt::standard_nodes::MemoryRegion>>) {
        for r in regs.into_iter().flatten() {
            let size = r.size.unwrap_or(4096) as u64;
            if let Some(range) = PhysRange::new(PhysAddr::new(r.starting_address as u64), size) {
                let _ = self.devices.push(range);
            }
        }
    }

    /// A `key=value` boot argument.
    pub fn bootarg(&self, key: &str) -> Option<&str> {
        self.bootargs.split_whitespace().find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == key).then_some(v)
        })
    }
}
